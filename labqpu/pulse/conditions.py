"""The condition of an ``if_else`` as a truth table over the classical bits it reads.

The controller's feed-forward decides on discriminated results, one bit each, with blocks that
nest (docs/protocol.md section 4.5). Any condition on measured bits is therefore exactly a
decision tree over those bits, and ``dynamic`` builds the tree from the truth table made here:

* ``(Clbit, value)`` and ``(ClassicalRegister, value)``: bit == value, register == value (bit i
  of the register is bit i of the value);
* a classical expression (``qiskit.circuit.classical.expr``) over bits and registers: the
  logical, bitwise, comparison and shift operators, casts between Bool and Uint, literals, and
  indexing a register or an unsigned value by a literal. Uint values have the width of their
  type: results wrap as in OpenQASM 3.

Only the bits the result depends on are kept (an index reads its bit alone; ``(c << 1) == 2``
on three bits reads two), so no other bit needs a measurement or a block.

Arithmetic (``add``, ``sub``, ``mul``, ``div``, ``negate``), floats, durations, stretches and
standalone classical variables (``expr.Var`` that is not a bit or register) are refused: the
controller reads measured bits and nothing else. A bit no measurement wrote holds 0 (as
classical bits start): ``truth_table(condition, zero=...)`` leaves it out of the table. A
condition may read at most ``MAX_CONDITION_BITS`` other bits (its table has 2**n rows).
"""

from __future__ import annotations

from collections.abc import Callable

from qiskit.circuit import ClassicalRegister, Clbit
from qiskit.circuit.classical import expr, types

__all__ = ["MAX_CONDITION_BITS", "ConditionError", "truth_table"]

#: Most distinct classical bits one condition may read.
MAX_CONDITION_BITS = 12

_COMPARE = {"EQUAL": int.__eq__, "NOT_EQUAL": int.__ne__, "LESS": int.__lt__,
            "LESS_EQUAL": int.__le__, "GREATER": int.__gt__, "GREATER_EQUAL": int.__ge__}
_BITWISE = {"BIT_AND": int.__and__, "BIT_OR": int.__or__, "BIT_XOR": int.__xor__}


class ConditionError(ValueError):
    """A condition the controller cannot decide; the message says why."""


def truth_table(condition: object, zero: Callable[[Clbit], bool] | None = None
                ) -> tuple[list[Clbit], list[bool]]:
    """(bits, table) of ``condition`` (an ``IfElseOp.condition``): the distinct classical bits
    it reads, in the order it reads them, and for every assignment k (bit j of k is the value
    of ``bits[j]``) whether the condition holds. A bit for which ``zero`` is true (one no
    measurement wrote) holds 0: it is not among ``bits`` nor counted against
    :data:`MAX_CONDITION_BITS`. Raises ``ConditionError``."""
    if isinstance(condition, tuple):  # the same as an expression
        target, value = condition
        if isinstance(target, Clbit):
            condition = expr.lift(target) if value else expr.logic_not(expr.lift(target))
        elif isinstance(target, ClassicalRegister):
            value = int(value)
            if not 0 <= value < 2 ** len(target):
                raise ConditionError(f"register {target.name!r} == {value}: a register of "
                                     f"{len(target)} bit(s) holds 0..{2 ** len(target) - 1}")
            condition = expr.equal(expr.lift(target), value)
        else:
            raise ConditionError(f"the condition {condition!r} compares neither a classical "
                                 "bit nor a register")
    if not isinstance(condition, expr.Expr):
        raise ConditionError(f"the condition {condition!r} is neither a (bit or register, "
                             "value) pair nor a classical expression")
    read: list[Clbit] = []
    evaluate = _compile(condition, read)
    bits = [b for b in read if zero is None or not zero(b)]
    if len(bits) > MAX_CONDITION_BITS:
        raise _too_many(len(bits))
    held = {b: 0 for b in read}
    table = []
    for k in range(2 ** len(bits)):
        values = held | {bit: (k >> j) & 1 for j, bit in enumerate(bits)}
        table.append(bool(evaluate(values)))
    return _relevant(bits, table)


def _relevant(bits: list[Clbit], table: list[bool]) -> tuple[list[Clbit], list[bool]]:
    """``bits`` and ``table`` without the bits the result does not depend on (``(c << 1) ==
    2`` on three bits reads two), so that no measurement of them is needed."""
    j = 0
    while j < len(bits):
        step = 1 << j
        if all(table[k] == table[k | step] for k in range(len(table)) if not k & step):
            table = [table[k] for k in range(len(table)) if not k & step]
            bits = bits[:j] + bits[j + 1:]
        else:
            j += 1
    return bits, table


def _too_many(n: int) -> ConditionError:
    return ConditionError(f"the condition reads {n} classical bits; at most "
                          f"{MAX_CONDITION_BITS} are supported (the branch is one block per "
                          "combination of their results)")


def _mask(node: expr.Expr) -> int:
    return (1 << node.type.width) - 1 if isinstance(node.type, types.Uint) else 1


Evaluator = Callable[[dict[Clbit, int]], int]


def _compile(node: expr.Expr, bits: list[Clbit]) -> Evaluator:
    """A function from bit values to the value of ``node`` (bool or unsigned int); the bits
    it reads are appended to ``bits`` on first sight."""
    if isinstance(node, expr.Var):
        var = node.var
        if isinstance(var, Clbit):
            if var not in bits:
                bits.append(var)
            return lambda values: values[var]
        if isinstance(var, ClassicalRegister):
            members = list(var)
            for bit in members:
                if bit not in bits:
                    bits.append(bit)
            return lambda values: sum(values[b] << i for i, b in enumerate(members))
        raise ConditionError(f"the classical variable {node.name!r} is not a measured bit or "
                             "register; the controller's feed-forward reads measurement "
                             "results only")
    if isinstance(node, expr.Value):
        if not isinstance(node.type, types.Bool | types.Uint):
            raise ConditionError(f"the literal {node.value!r} of type {node.type} is not a "
                                 "bool or an unsigned integer")
        constant = int(node.value)
        return lambda values: constant
    if isinstance(node, expr.Cast):
        inner = _compile(node.operand, bits)
        if isinstance(node.type, types.Bool):
            return lambda values: int(inner(values) != 0)
        if isinstance(node.type, types.Uint):
            mask = _mask(node)
            return lambda values: inner(values) & mask
        raise ConditionError(f"a cast to {node.type} is not supported in a condition")
    if isinstance(node, expr.Index):
        if not isinstance(node.index, expr.Value):
            raise ConditionError("an index into a register must be a literal")
        position = int(node.index.value)
        if isinstance(node.target, expr.Var) and isinstance(node.target.var, ClassicalRegister):
            register = node.target.var
            if not 0 <= position < len(register):
                raise ConditionError(f"index {position} into register {register.name!r} of "
                                     f"{len(register)} bit(s)")
            return _compile(expr.lift(register[position]), bits)  # reads that bit alone
        target = _compile(node.target, bits)
        return lambda values: (target(values) >> position) & 1
    if isinstance(node, expr.Unary):
        operand = _compile(node.operand, bits)
        op = node.op.name
        if op == "LOGIC_NOT":
            return lambda values: int(not operand(values))
        if op == "BIT_NOT":
            mask = _mask(node)
            return lambda values: ~operand(values) & mask
        raise _unsupported(op)
    if isinstance(node, expr.Binary):
        left, right = _compile(node.left, bits), _compile(node.right, bits)
        op = node.op.name
        if op == "LOGIC_AND":
            return lambda values: int(bool(left(values)) and bool(right(values)))
        if op == "LOGIC_OR":
            return lambda values: int(bool(left(values)) or bool(right(values)))
        if op in _COMPARE:
            compare = _COMPARE[op]
            return lambda values: int(compare(left(values), right(values)))
        if op in _BITWISE:
            bitwise = _BITWISE[op]
            return lambda values: bitwise(left(values), right(values))
        if op in ("SHIFT_LEFT", "SHIFT_RIGHT"):
            mask = _mask(node)
            if op == "SHIFT_LEFT":
                return lambda values: (left(values) << right(values)) & mask
            return lambda values: left(values) >> right(values)
        raise _unsupported(op)
    raise ConditionError(f"the expression {node!r} ({type(node).__name__}) is not supported "
                         "in a condition")


def _unsupported(op: str) -> ConditionError:
    return ConditionError(f"the operator {op.lower()} is not supported in a condition: the "
                          "controller decides on logical, bitwise, comparison and shift "
                          "operations of measured bits only")
