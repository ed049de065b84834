"""Review cases of the command line: it takes no option by a prefix of its name, says when
the demo's counts were too few to judge, and does not lose a Ctrl-C to a destructor."""

from __future__ import annotations

import pytest

from labqpu.cli import main


@pytest.mark.parametrize(("words", "prefix", "meant"), [
    # a review's cases: `--b` began a forced bootstrap, `--al` a full calibration
    (["calibrate", "--b"], "--b", "--rb"),
    (["calibrate", "--al"], "--al", "--all"),
    (["run", "--demo", "--shot", "100"], "--shot", "--shots"),
])
def test_an_options_prefix_is_refused_naming_the_option(words, prefix, meant, capsys, tmp_path,
                                                        monkeypatch) -> None:
    monkeypatch.setenv("LABQPU_HOME", str(tmp_path))
    with pytest.raises(SystemExit) as exited:
        main(words)
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert f"unrecognized arguments: {prefix}" in err and f"did you mean {meant!r}?" in err, err
    assert not (tmp_path / "lab5").exists()  # nothing started, no store made


def test_a_demo_of_too_few_shots_to_judge_says_so(capsys, tmp_path, monkeypatch) -> None:
    """A review's case: a device whose gates did nothing passed `--shots 50` silently."""
    monkeypatch.setenv("LABQPU_HOME", str(tmp_path))
    assert main(["run", "--demo", "--shots", "50", "--seed", "3"]) == 0
    err = capsys.readouterr().err
    assert "not judged whether this is a Bell pair: that takes 100 shots or more" in err, err


def test_a_ctrl_c_that_lands_in_a_destructor_is_delivered_again() -> None:
    """A test run's case: Ctrl-C landed while a ZeroMQ frame was freed; a destructor drops
    exceptions, so the calibration went on and exited 0. The hook ``main`` installs delivers
    the interrupt again once the destructor is done."""
    import sys
    import time

    from labqpu.cli import _interrupt_again

    class Dropped:
        def __del__(self) -> None:
            raise KeyboardInterrupt

    hook = sys.unraisablehook
    sys.unraisablehook = _interrupt_again(hook)
    try:
        for _ in range(50):  # a delivery that raced the hook was lost in 18 of 200 under load
            with pytest.raises(KeyboardInterrupt):
                Dropped()
                deadline = time.monotonic() + 10
                while time.monotonic() < deadline:
                    time.sleep(0.001)
    finally:
        sys.unraisablehook = hook

