"""Options and checks shared by the ``labqpu`` command's subcommands (:mod:`labqpu.cli`).

Imports only the standard library at import time, so ``labqpu --help`` and ``labqpu sim`` stay
light.
"""

from __future__ import annotations

import argparse
from pathlib import Path

SIMULATOR_HELP = ("start the embedded simulator of the --config file (a file whose ports are "
                  "0 needs it; a built-in device always runs on it)")

#: The backend's limit on shots per circuit (``labqpu.backend.backend.MAX_SHOTS``, which
#: ``tests/cli/test_cli_run.py`` checks against this copy; the command does not import the backend
#: to say it).
MAX_SHOTS = 100_000


def not_a_file(path: Path) -> str:
    """Why ``path``, which is not a regular file, cannot be read: a directory, or missing."""
    return f"{path} is a directory, not a file" if path.is_dir() else f"no such file: {path}"


def shots_and_seed_problem(shots: int, seed: int | None) -> str | None:
    """What is wrong with ``--shots`` / ``--seed``, before anything starts; None if nothing."""
    if not 1 <= shots <= MAX_SHOTS:
        return f"--shots must be a whole number from 1 to {MAX_SHOTS}, got {shots}"
    from labqpu.drivers.protocol import SEED_LIMIT  # not at import: --help stays light

    if seed is not None and not 0 <= seed < SEED_LIMIT:
        return f"--seed must be a whole number from 0 to 2**63 - 1, got {seed}"
    return None


def non_negative_int(text: str) -> int:
    """An argparse type: a whole number >= 0."""
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be a whole number >= 0, got {text!r}")
    return value


def positive_int(text: str) -> int:
    """An argparse type: a whole number >= 1."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number >= 1, got {text!r}")
    return value
