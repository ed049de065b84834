"""What becomes of the other parts of a job's run when one part fails or the job is cancelled:
each is aborted, and the error the job raises says what came of each (a run left playing on
another controller of a synchronised run is not only logged)."""

from __future__ import annotations

import threading

from labqpu.drivers.controller import CANCEL_ABORT_S
from labqpu.errors import InstrumentError, LabQpuError


def abort_runs(runs: list[tuple], cancel: threading.Event) -> list[str]:
    """Abort ``runs`` ((client, run id, ...) each), the parts of a job's run that the job
    leaves behind when another part failed or the job was cancelled; returns what each abort
    did, named by controller. A cancelled job's controllers are asked once and waited for
    ``CANCEL_ABORT_S`` (s) each (one that answers nothing stops the run at its time limit)."""
    return [f"{client.label}: "
            f"{client.abort_quietly(run_id, timeout_s=CANCEL_ABORT_S if cancel.is_set() else None)}"
            for client, run_id, *_ in runs]


def tell(exc: BaseException, outcomes: list[str]) -> None:
    """Add the ``outcomes`` of :func:`abort_runs` to the message of ``exc`` (which the job's
    error quotes), so that a run left playing (on another controller of a synchronised run)
    is not only logged."""
    if not outcomes:
        return
    text = "the job's runs: " + "; ".join(outcomes)
    if isinstance(exc, LabQpuError):
        exc.message = f"{exc.message}; {text}"
        exc.args = (exc.message,)
        if isinstance(exc, InstrumentError):
            exc.detail = f"{exc.detail}; {text}"
    else:
        exc.add_note(text)
