"""The simulator's process ends through ``exit_now``: what it printed reaches its reader and
the exit code is the one it was given, also when a standard stream is already closed."""

from __future__ import annotations

import subprocess
import sys

import pytest

from labqpu.firmware_sim.__main__ import EXIT_SERVER_DIED

PRELUDE = "from labqpu.firmware_sim.__main__ import exit_now\nimport logging, sys\n"


@pytest.mark.parametrize("code", [0, 2, EXIT_SERVER_DIED])
def test_output_is_flushed_and_the_code_kept(code):
    script = PRELUDE + (
        "logging.basicConfig(format='%(message)s')\n"
        "print('endpoints', end='')\n"  # a pipe is block-buffered: nothing sent yet
        "logging.getLogger('sim').warning('stopping')\n"
        f"exit_now({code})\n")
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == code
    assert proc.stdout == "endpoints"
    assert proc.stderr.strip() == "stopping"


def test_a_closed_stdout_does_not_change_the_code():
    script = PRELUDE + "print('x')\nsys.stdout.close()\nexit_now(70)\n"
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 70, proc.stderr
