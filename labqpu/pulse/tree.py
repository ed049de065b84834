"""The pulse builder's instruction tree: its nodes, binding parameters in them, and placing
them in time.

A ``with pulse.build(...)`` block records :class:`Block` nodes (an alignment and children in
the order written) whose leaves are plays, delays, frame changes, acquisitions and barriers.
:func:`bind_node` substitutes parameter values in a copy of a tree; :func:`schedule` places a
bound block's leaves (start times in samples, relative to the block's start) by the block's
alignment: ``left`` (each unit as early as its channels allow), ``right`` (as late as
possible, flush with the block's end) and ``sequential`` (one after another). The pulse
builder (``labqpu.pulse.builder``) and the pulse-gate lowering (``labqpu.pulse.gates``) share
them.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

from qiskit.circuit import Parameter, ParameterExpression

from labqpu.pulse.channels import Channel, acquire_channel
from labqpu.pulse.shapes import Bindings, Shape, Value, bind_value, whole_samples

# ------------------------------------------------------------------------ instructions


#: A leaf's condition: the (acquisition ident, value) tests of its enclosing ``if_result``
#: blocks, outermost first, or None.
Cond = tuple[tuple[int, int], ...] | None


@dataclass
class PlayNode:
    """A pulse ``shape`` played on an output ``channel``; ``cond``: its ``if_result`` tests."""

    channel: Channel
    shape: Shape
    cond: Cond = None


@dataclass
class DelayNode:
    """Nothing on ``channel`` for ``duration`` samples."""

    channel: Channel
    duration: Value


@dataclass
class FrameNode:
    """A frame change on ``channel``: ``value`` in rad (phases) or Hz (frequencies)."""

    channel: Channel
    op: str  # shift_phase, set_phase, shift_frequency, set_frequency
    value: Value
    cond: Cond = None


@dataclass
class AcquireNode:
    """An acquisition of ``qubit`` for ``duration`` samples into ``clbit``; ``ident``: its
    number in its builder (from 1), which the ``if_result`` blocks that test it name."""

    qubit: int
    duration: Value
    clbit: int
    ident: int


@dataclass
class BarrierNode:
    """Lines up ``channels`` (all of the enclosing block's when empty)."""

    channels: tuple[Channel, ...]  # () = every channel of the enclosing block


@dataclass
class Block:
    """An alignment block (``left``, ``right`` or ``sequential``) and its children in the
    order written."""

    alignment: str
    children: list = field(default_factory=list)


def channels_of(node) -> set[Channel]:
    """The channels ``node`` (a leaf or a block, with everything in it) occupies."""
    if isinstance(node, Block):
        out: set[Channel] = set()
        for child in node.children:
            out |= channels_of(child)
        return out
    if isinstance(node, AcquireNode):
        return {acquire_channel(node.qubit)}
    if isinstance(node, BarrierNode):
        return set(node.channels)
    return {node.channel}


# ------------------------------------------------------------------------ binding


def bind_node(node, bindings: Bindings):
    """A copy of ``node`` with ``bindings`` substituted in every value."""
    if isinstance(node, Block):
        return Block(node.alignment, [bind_node(c, bindings) for c in node.children])
    if isinstance(node, PlayNode):
        return PlayNode(node.channel, node.shape.assign_parameters(bindings), node.cond)
    if isinstance(node, DelayNode):
        return DelayNode(node.channel,
                         bind_value(node.duration, bindings, f"delay on {node.channel}"))
    if isinstance(node, FrameNode):
        return FrameNode(node.channel, node.op,
                         bind_value(node.value, bindings, f"{node.op} on {node.channel}"),
                         node.cond)
    if isinstance(node, AcquireNode):
        return AcquireNode(node.qubit, bind_value(node.duration, bindings,
                                                  f"acquire on qubit {node.qubit}"),
                           node.clbit, node.ident)
    return node


def parameters_of(node) -> set[Parameter]:
    """The unbound Qiskit parameters in ``node`` (a leaf or a block, with everything in it)."""
    if isinstance(node, Block):
        out: set[Parameter] = set()
        for child in node.children:
            out |= parameters_of(child)
        return out
    if isinstance(node, PlayNode):
        return set(node.shape.parameters)
    value = getattr(node, "value", getattr(node, "duration", None))
    return set(value.parameters) if isinstance(value, ParameterExpression) else set()


def swept_elsewhere(node, swept: set[str]) -> set[str]:
    """The swept parameter names that ``node`` uses other than as a play's whole amplitude."""
    if isinstance(node, Block):
        return set().union(*(swept_elsewhere(c, swept) for c in node.children))
    if isinstance(node, PlayNode):
        used: set[str] = set()
        for f in fields(node.shape):
            value = getattr(node.shape, f.name)
            if isinstance(value, ParameterExpression) and not (
                    f.name == "amp" and isinstance(value, Parameter)):
                used |= {p.name for p in value.parameters}
        return used & swept
    return {p.name for p in parameters_of(node)} & swept


# ------------------------------------------------------------------------ scheduling


def leaf_duration(node) -> int:
    """Duration (samples) of a bound leaf instruction."""
    if isinstance(node, PlayNode):
        return int(node.shape.duration_samples)
    if isinstance(node, DelayNode):
        return whole_samples(node.duration, f"delay on {node.channel}")
    if isinstance(node, AcquireNode):
        return whole_samples(node.duration, f"acquire on qubit {node.qubit}", minimum=1)
    return 0


def schedule(block: Block) -> tuple[int, list[tuple[int, Any]]]:
    """(duration, [(start, leaf)]) of a bound block, starts relative to the block's start.

    Leaves keep the order in which they were written; among events at the same sample that
    order decides (a phase shift written before a play at the same time applies to it).
    """
    placed: list[tuple[int, Any, int]] = []  # (start, leaf, order in the block)
    ends: dict[Channel, int] = {}
    every = channels_of(block)
    units = []
    for child in block.children:
        if isinstance(child, Block):
            duration, inner = schedule(child)
            units.append((child, channels_of(child), duration, inner))
        else:
            chans = set(every) if isinstance(child, BarrierNode) and not child.channels \
                else channels_of(child)
            units.append((child, chans, leaf_duration(child), [(0, child)]))
    order = list(enumerate(units))
    if block.alignment == "right":
        order.reverse()
    cursor = 0
    for index, (_node, chans, duration, inner) in order:
        if block.alignment == "sequential":
            start = cursor
        else:
            start = max((ends.get(c, 0) for c in chans), default=0)
        for c in chans:
            ends[c] = start + duration
        cursor = max(cursor, start + duration)
        for offset, leaf in inner:
            placed.append((start, (offset, leaf), index))
    total = max([cursor, *ends.values()])
    out = []
    for start, (offset, leaf), index in placed:
        if block.alignment == "right":
            # ``start`` counted from the end: the unit occupies [total - start - d, total - start)
            unit_duration = units[index][2]
            begin = total - start - unit_duration
        else:
            begin = start
        out.append((begin + offset, leaf, index))
    # Stable order: by the unit's place in the block, then its own inner order.
    out.sort(key=lambda r: r[2])
    return total, [(t, leaf) for t, leaf, _ in out]
