"""IQ points -> counts and memory (pure functions, no simulator)."""

from __future__ import annotations

import numpy as np

from labqpu.backend.results import _register_values


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
