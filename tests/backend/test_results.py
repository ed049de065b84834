"""IQ points -> counts and memory (pure functions, no simulator)."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from labqpu.backend.results import _register_values, outcome_counts


def _reference(bits: np.ndarray, clbits: list[int]) -> list[int]:
    out = []
    for row in bits:
        value = 0
        for bit, c in zip(row, clbits, strict=True):
            value = (value & ~(1 << c)) | (int(bit) << c)
        out.append(value)
    return out


def test_register_values_match_a_plain_loop() -> None:
    rng = np.random.default_rng(1)
    bits = rng.integers(0, 2, size=(500, 4), dtype=np.uint8)
    clbits = [3, 0, 7, 1]
    assert [int(v) for v in _register_values(bits, np.array(clbits))] == _reference(bits, clbits)


def test_later_acquisition_into_the_same_clbit_wins() -> None:
    bits = np.array([[1, 0], [0, 1]], dtype=np.uint8)
    assert [int(v) for v in _register_values(bits, np.array([2, 2]))] == [0, 4]


def test_more_than_64_clbits_use_python_integers() -> None:
    bits = np.array([[1, 1], [0, 1]], dtype=np.uint8)
    values = _register_values(bits, np.array([0, 70]))
    assert [int(v) for v in values] == [1 + (1 << 70), 1 << 70]


def test_no_acquisitions_give_zero() -> None:
    values = _register_values(np.zeros((3, 0), dtype=np.uint8), np.zeros(0, dtype=np.int32))
    assert [int(v) for v in values] == [0, 0, 0]


@pytest.mark.parametrize(("num_clbits", "shots"), [
    (1, 100), (5, 1000), (10, 100), (11, 100), (11, 4096), (40, 1000), (64, 200), (70, 50)])
def test_outcome_counts_match_a_plain_tally_in_ascending_order(num_clbits, shots) -> None:
    """Counts by tally (values below 1024 or the shot count) and by sorting (larger values,
    bit 63 set, and Python integers beyond 64 clbits) agree with ``collections.Counter``,
    keys in ascending register value."""
    rng = np.random.default_rng(num_clbits * shots)
    # the register's top clbit always among those measured, so wide registers reach it
    clbits = np.array([num_clbits - 1, *rng.permutation(num_clbits - 1)[:7]])
    bits = rng.integers(0, 2, size=(shots, clbits.size), dtype=np.uint8)
    values = _register_values(bits, clbits)
    assert (values.dtype == object) == (num_clbits > 64)
    reference = Counter(int(v) for v in values)
    counts = outcome_counts(values)
    assert counts == {hex(v): n for v, n in reference.items()}
    assert [int(k, 16) for k in counts] == sorted(reference)
    assert sum(counts.values()) == shots


def test_outcome_counts_of_no_shots_and_of_values_beyond_the_tally() -> None:
    assert outcome_counts(np.zeros(0, dtype=np.uint64)) == {}
    values = np.array([1 << 40, 3, 1 << 63, 3], dtype=np.uint64)
    assert outcome_counts(values) == {"0x3": 2, hex(1 << 40): 1, hex(1 << 63): 1}
