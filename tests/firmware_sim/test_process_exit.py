"""The simulator's process ends through ``exit_now``: what it printed reaches its reader and
the exit code is the one it was given, also when a standard stream is already closed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

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


#: A process that starts a child watching it (``watch_parent``) and prints the child's pid.
MIDDLE = """
import os, subprocess, sys, time
child = subprocess.Popen([sys.executable, "-c", sys.argv[1], str(os.getpid())])
print(child.pid, flush=True)
time.sleep(60)
"""
#: The child: its parent watched every 50 ms until it is gone, then the process ends.
WATCHER = PRELUDE + (
    "import threading, time\n"
    "from labqpu.firmware_sim.__main__ import watch_parent\n"
    "watch_parent(int(sys.argv[1]), lambda: exit_now(0), threading.Event(), 0.05)\n"
    "print('watching', flush=True)\n"
    "time.sleep(60)\n")


def _gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] == "Z"  # a zombie: it has ended
    except FileNotFoundError:
        return True


def test_a_simulator_still_starting_ends_when_its_client_is_killed():
    """``--parent-pid`` is watched from the start of the simulator's main (``watch_parent``),
    not only once it serves: a client SIGKILLed while its simulator started left it running
    until its start-up ended (seconds; a minute with numba's first compilation)."""
    middle = subprocess.Popen([sys.executable, "-c", MIDDLE, WATCHER], stdout=subprocess.PIPE,
                              text=True)
    child = None
    try:
        child = int(middle.stdout.readline())
        deadline = time.monotonic() + 60
        while not os.path.exists(f"/proc/{child}") and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(1.0)  # the child is watching (its imports take ~0.5 s)
        assert not _gone(child)
        middle.kill()
        middle.wait(timeout=10)
        deadline = time.monotonic() + 10
        while not _gone(child) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _gone(child), "the watching process outlived its parent"
    finally:
        middle.kill()
        middle.wait(timeout=10)
        middle.stdout.close()
        if child is not None and not _gone(child):
            os.kill(child, signal.SIGKILL)
