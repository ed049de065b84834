"""Truth tables of if_else conditions (``labqpu.pulse.conditions``) against a reference written
here: random expressions over two registers are built together with a Python function of
the bit values that means the same thing, and both are compared on every assignment."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from qiskit.circuit import ClassicalRegister, Clbit
from qiskit.circuit.classical import expr, types

from labqpu.pulse.conditions import MAX_CONDITION_BITS, ConditionError, truth_table

A = ClassicalRegister(2, "a")
B = ClassicalRegister(3, "b")
LONE = Clbit()


def _uint(draw, depth: int):
    """(expression of type Uint, reference f(bits) -> int, width)."""
    kind = draw(st.sampled_from(["a", "b", "literal", "not", "and", "or", "xor", "shl", "shr"]
                                if depth > 0 else ["a", "b", "literal"]))
    if kind == "a":
        return expr.lift(A), lambda v: v["a0"] + 2 * v["a1"], 2
    if kind == "b":
        return expr.lift(B), lambda v: v["b0"] + 2 * v["b1"] + 4 * v["b2"], 3
    if kind == "literal":
        value = draw(st.integers(0, 7))
        return expr.lift(value, types.Uint(3)), lambda v: value, 3
    if kind == "not":
        node, f, width = _uint(draw, depth - 1)
        return expr.bit_not(node), lambda v: (2 ** width - 1) - f(v), width
    left, lf, lw = _uint(draw, depth - 1)
    right, rf, rw = _uint(draw, depth - 1)
    if kind in ("shl", "shr"):
        amount = draw(st.integers(0, 3))
        if kind == "shl":
            return expr.shift_left(left, amount), lambda v: (lf(v) * 2 ** amount) % 2 ** lw, lw
        return expr.shift_right(left, amount), lambda v: lf(v) // 2 ** amount, lw
    if lw != rw:  # qiskit promotes the narrower operand to the wider width
        return _uint(draw, depth - 1)
    node = {"and": expr.bit_and, "or": expr.bit_or, "xor": expr.bit_xor}[kind](left, right)
    per_bit = {"and": min, "or": max, "xor": lambda x, y: (x + y) % 2}[kind]
    return node, (lambda v: sum(per_bit((lf(v) >> i) % 2, (rf(v) >> i) % 2) * 2 ** i
                                for i in range(lw))), lw


def _bool(draw, depth: int):
    """(expression of type Bool, reference f(bits) -> bool)."""
    kind = draw(st.sampled_from(["bit", "lone", "compare", "not", "and", "or", "index", "cast"]
                                if depth > 0 else ["bit", "lone", "compare", "index", "cast"]))
    if kind == "bit":
        i = draw(st.integers(0, 1))
        return expr.lift(A[i]), lambda v: v[f"a{i}"] == 1
    if kind == "lone":
        return expr.lift(LONE), lambda v: v["x"] == 1
    if kind == "index":
        i = draw(st.integers(0, 2))
        return expr.index(B, i), lambda v: v[f"b{i}"] == 1
    if kind == "cast":
        node, f, _ = _uint(draw, max(depth - 1, 0))
        return expr.cast(node, types.Bool()), lambda v: f(v) != 0
    if kind == "compare":
        left, lf, _ = _uint(draw, max(depth - 1, 0))
        right, rf, _ = _uint(draw, max(depth - 1, 0))
        name = draw(st.sampled_from(["equal", "not_equal", "less", "less_equal", "greater",
                                     "greater_equal"]))
        python = {"equal": lambda x, y: x == y, "not_equal": lambda x, y: x != y,
                  "less": lambda x, y: x < y, "less_equal": lambda x, y: x <= y,
                  "greater": lambda x, y: x > y, "greater_equal": lambda x, y: x >= y}[name]
        return getattr(expr, name)(left, right), lambda v: python(lf(v), rf(v))
    if kind == "not":
        node, f = _bool(draw, depth - 1)
        return expr.logic_not(node), lambda v: not f(v)
    left, lf = _bool(draw, depth - 1)
    right, rf = _bool(draw, depth - 1)
    if kind == "and":
        return expr.logic_and(left, right), lambda v: lf(v) and rf(v)
    return expr.logic_or(left, right), lambda v: lf(v) or rf(v)


@st.composite
def conditions(draw):
    return _bool(draw, draw(st.integers(0, 3)))


NAMES = {**{A[i]: f"a{i}" for i in range(2)}, **{B[i]: f"b{i}" for i in range(3)}, LONE: "x"}


@settings(max_examples=300, deadline=None)
@given(conditions())
def test_random_expressions_match_the_reference(case) -> None:
    node, reference = case
    bits, table = truth_table(node)
    assert len(set(bits)) == len(bits) and len(table) == 2 ** len(bits)
    for k, holds in enumerate(table):
        values = dict.fromkeys(NAMES.values(), 0)
        values.update({NAMES[bit]: (k >> j) & 1 for j, bit in enumerate(bits)})
        assert holds == bool(reference(values)), (node, k)


def test_only_the_bits_a_condition_depends_on_are_read() -> None:
    """An index reads its bit alone; bits a result does not depend on are dropped."""
    assert truth_table(expr.index(B, 1)) == ([B[1]], [False, True])
    bits, table = truth_table(expr.equal(expr.shift_left(B, 1), 2))  # b2 shifts out
    assert bits == [B[0], B[1]] and table == [False, True, False, False]
    assert truth_table(expr.logic_or(expr.lift(LONE), expr.logic_not(LONE))) == ([], [True])
    with pytest.raises(ConditionError, match="index 3 into register 'b' of 3 bit"):
        truth_table(expr.index(B, 3))


def test_pairs_compare_a_bit_or_a_register_with_a_value() -> None:
    assert truth_table((LONE, 1)) == ([LONE], [False, True])
    assert truth_table((LONE, False)) == ([LONE], [True, False])
    bits, table = truth_table((B, 5))
    assert bits == list(B) and [k for k, t in enumerate(table) if t] == [5]


@pytest.mark.parametrize(("condition", "message"), [
    ((A, 4), r"register 'a' == 4: a register of 2 bit\(s\) holds 0..3"),
    (expr.equal(expr.add(A, 1), 2), "the operator add is not supported"),
    (expr.equal(expr.mul(A, 2), 2), "the operator mul is not supported"),
    (expr.Var.new("flag", types.Bool()), "classical variable 'flag' is not a measured bit"),
    (expr.less(expr.lift(1.5), expr.lift(2.5)), "literal 1.5 of type Float"),
    ((ClassicalRegister(MAX_CONDITION_BITS + 1, "wide"), 1),
     rf"reads {MAX_CONDITION_BITS + 1} classical bits; at most {MAX_CONDITION_BITS}"),
    ("c == 1", "neither a \\(bit or register, value\\) pair nor a classical expression"),
])
def test_what_the_controller_cannot_decide_is_refused_by_name(condition, message) -> None:
    with pytest.raises(ConditionError, match=message):
        truth_table(condition)
