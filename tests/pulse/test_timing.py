"""Timing constraints: parsed from capabilities, combined across controllers, padding onto the
grid, and the checks that refuse a misaligned program before anything is sent."""

from __future__ import annotations

import numpy as np
import pytest

from labqpu.errors import CompilationError
from labqpu.pulse.program import ProgramBuilder
from labqpu.pulse.timing import TimingConstraints

QM_LIKE = TimingConstraints(granularity=4, min_length=16, pulse_alignment=4, acquire_alignment=4)


def test_capabilities_without_timing_mean_no_constraint():
    assert TimingConstraints.from_capabilities({"outputs": 4}).trivial
    t = TimingConstraints.from_capabilities({"timing": {"granularity": 4, "min_length": 16}})
    assert (t.granularity, t.min_length, t.pulse_alignment, t.acquire_alignment) == (4, 16, 1, 1)


@pytest.mark.parametrize("timing, message", [
    ({"granularity": 0}, "granularity must be a positive whole number"),
    ({"granularity": 2.5}, "granularity must be a positive whole number"),
    ({"min_length": True}, "min_length must be a positive whole number"),
    ({"clock": 4}, "unknown timing capability 'clock'"),
    ([4, 16], "capability 'timing' must be a table"),
])
def test_bad_capabilities_are_named(timing, message):
    with pytest.raises(ValueError, match=f"ctrl7: .*{message}"):
        TimingConstraints.from_capabilities({"timing": timing}, "ctrl7")


def test_grid_padding_and_combination():
    t = TimingConstraints(granularity=2, min_length=16, pulse_alignment=4, acquire_alignment=8)
    assert t.grid == 8
    assert [t.pad(n) for n in (1, 16, 17, 34, 40)] == [16, 16, 24, 40, 40]
    both = QM_LIKE.combine(TimingConstraints(granularity=6, min_length=4))
    assert (both.granularity, both.min_length, both.pulse_alignment) == (12, 16, 4)
    t.check_delay(1000, "delay on (2,)")
    with pytest.raises(CompilationError, match=r"delay on \(2,\): delay of 1001 samples .* 8"):
        t.check_delay(1001, "delay on (2,)")


def _program(start: int, length: int, acq_start: int = 40, acq_len: int = 400):
    b = ProgramBuilder("ctrl0", 1e9)
    wid = b.waves.add(("const", length), lambda: np.full(length, 0.1, np.complex64))
    b.play(0, start, wid, 0.5)
    b.acquire(0, acq_start, acq_len, 0.0, 0, 0)
    return b.build(num_clbits=1, header={"name": "probe"})


def test_a_program_on_the_grid_passes():
    QM_LIKE.check_program(_program(start=8, length=40))


@pytest.mark.parametrize("kwargs, message", [
    ({"start": 6, "length": 40}, r"play 0 \(port 0, start 6, 40 samples\) starts off the pulse "
                                 r"alignment of 4"),
    ({"start": 8, "length": 34}, r"play 0 .* waveform length off the granularity of 4"),
    ({"start": 8, "length": 12}, r"play 0 .* shorter than the minimum length of 16"),
    ({"start": 8, "length": 40, "acq_start": 42}, r"acquisition 0 \(input 0, start 42, 400 "
                                                  r"samples\) starts off the acquire alignment"),
    ({"start": 8, "length": 40, "acq_len": 402}, r"acquisition 0 .* off the granularity"),
])
def test_a_misaligned_program_is_refused_naming_the_play(kwargs, message):
    with pytest.raises(CompilationError, match=f"program 'probe': {message}"):
        QM_LIKE.check_program(_program(**kwargs))
