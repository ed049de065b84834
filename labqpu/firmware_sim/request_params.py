"""The simulated controller's checks of request parameters: each bad parameter becomes a
typed error reply (``RequestError``) naming the operation, the parameter and its value."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from labqpu.drivers.protocol import ERR_BAD_PARAMS, OP_RUN, Request

__all__ = ["MAX_FETCH_WAIT_S", "MAX_TIME_LIMIT_S", "RequestError", "RunParams", "param",
           "run_params", "wait_s"]

#: Longest a ``fetch`` may ask the controller to hold its reply for a run to end (s).
MAX_FETCH_WAIT_S = 1.0
#: Longest time limit a ``run`` may ask for (s).
MAX_TIME_LIMIT_S = 86_400.0


class RequestError(Exception):
    """A request the server refuses with a typed error reply."""

    def __init__(self, error_type: str, message: str) -> None:
        super().__init__(message)
        self.error_type = error_type
        self.message = message


def param(params: dict[str, Any], name: str, kind: type, *, op: str) -> Any:
    """``params[name]`` if it is a ``kind`` (a bool is no int); else ``RequestError``."""
    value = params.get(name)
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
        raise RequestError(
            ERR_BAD_PARAMS, f"{op}: parameter {name!r} must be {kind.__name__}, got {value!r}"
        )
    return value


def wait_s(request: Request, op: str) -> float:
    """The request's ``wait_s`` (s, default 0), refused unless a number in
    0..``MAX_FETCH_WAIT_S``."""
    value = request.params.get("wait_s", 0)
    if isinstance(value, bool) or not isinstance(value, int | float) \
            or not 0 <= value <= MAX_FETCH_WAIT_S:
        raise RequestError(ERR_BAD_PARAMS, f"{op}: wait_s must be a number in 0.."
                                           f"{MAX_FETCH_WAIT_S} s, got {value!r}")
    return float(value)


@dataclass(frozen=True)
class RunParams:
    """A ``run`` request's checked parameters: the program, the shot count, the time limit
    (s, None: none) and the program's parameter values."""

    program_id: str
    shots: int
    time_limit_s: float | None
    params: dict[str, Any]


def run_params(request: Request) -> RunParams:
    """Check a ``run`` request's parameters; ``RequestError`` names the first bad one."""
    program_id = param(request.params, "program_id", str, op=OP_RUN)
    shots = param(request.params, "shots", int, op=OP_RUN)
    if shots < 1:
        raise RequestError(ERR_BAD_PARAMS, f"run: shots must be >= 1, got {shots}")
    limit = request.params.get("time_limit_s")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int | float)
                              or not 0 < limit <= MAX_TIME_LIMIT_S):
        raise RequestError(ERR_BAD_PARAMS, f"run: time_limit_s must be a number in "
                                           f"(0, {MAX_TIME_LIMIT_S}] s, got {limit!r}")
    values = request.params.get("params", {})
    if not isinstance(values, dict):
        raise RequestError(ERR_BAD_PARAMS, f"run: 'params' must be an object: {values!r}")
    return RunParams(program_id, shots, None if limit is None else float(limit), values)
