"""A circuit run again under the same calibration gets the program compiled before (with its own
header), and anything the compiler reads that changes makes it compile anew."""

from __future__ import annotations

import numpy as np
import pytest
from qiskit import QuantumCircuit, transpile
from qiskit.circuit import Parameter
from qiskit.circuit.random import random_circuit

from labqpu.backend.compiled import MAX_CIRCUITS, CompiledPrograms, circuit_key
from labqpu.pulse.compiler import compile_circuit


def _native(lab_backend, angle: float = 0.3, name: str = "c") -> QuantumCircuit:
    qc = QuantumCircuit(2, 2, name=name)
    qc.rz(angle, 0)
    qc.sx(0)
    qc.cz(0, 1)
    qc.measure([0, 1], [0, 1])
    return transpile(qc, lab_backend, initial_layout=[0, 1], optimization_level=0)


def test_a_circuit_run_again_gets_the_same_program_with_its_own_header(lab_backend) -> None:
    first = _native(lab_backend, name="first")
    job1 = lab_backend.run(first, shots=50)
    again = first.copy(name="again")
    again.metadata = {"point": 7}
    job2 = lab_backend.run(again, shots=50)
    p1, p2 = job1.programs[0], job2.programs[0]
    assert p2.content_hash == p1.content_hash
    assert p2.play_start is p1.play_start  # not compiled again: the arrays are shared
    assert p2.header == {"name": "again", "creg_sizes": [["c", 2]], "memory_slots": 2,
                         "metadata": {"point": 7}}
    assert p1.header["name"] == "first" and p1.header["metadata"] == {}
    result = job2.result(timeout=60)
    assert result.results[0].header["name"] == "again"
    assert sum(result.get_counts().values()) == 50
    job1.result(timeout=60)


def test_a_changed_circuit_is_compiled_anew(lab_backend) -> None:
    circuit = _native(lab_backend, angle=0.3)
    before = lab_backend.run(circuit, shots=20).programs[0]
    circuit.x(1)  # changed in place after its run
    after = lab_backend.run(circuit, shots=20).programs[0]
    assert after.content_hash == compile_circuit(circuit, lab_backend.snapshot,
                                                 lab_backend.channels).content_hash
    assert after.content_hash != before.content_hash
    other = lab_backend.run(_native(lab_backend, angle=0.4), shots=20).programs[0]
    assert other.content_hash != before.content_hash


def test_circuits_that_differ_only_in_their_classical_bits_get_their_own_programs(
        lab_backend) -> None:
    programs = []
    for clbits in ([0, 1], [1, 0]):
        qc = QuantumCircuit(2, 2)
        qc.x(0)
        qc.measure([0, 1], clbits)
        native = transpile(qc, lab_backend, initial_layout=[0, 1])
        programs.append(lab_backend.run(native, shots=100).programs[0])
        counts = lab_backend.run(native, shots=100).result(timeout=60).get_counts()
        assert max(counts, key=counts.get) == ("01" if clbits == [0, 1] else "10")
    pairs = [set(zip(p.acq_qubit.tolist(), p.acq_clbit.tolist(), strict=True))
             for p in programs]
    assert pairs == [{(0, 0), (1, 1)}, {(0, 1), (1, 0)}]


def test_every_program_from_the_cache_is_the_compilers(lab_backend) -> None:
    """Random circuits, each run twice among the others: the program each run gets equals
    ``compile_circuit``'s for that circuit, byte for byte (content hash)."""
    circuits = [transpile(random_circuit(3, 4, measure=True, seed=seed), lab_backend,
                          seed_transpiler=seed) for seed in range(8)]
    for circuit in circuits + circuits[::-1]:
        program = lab_backend.run(circuit, shots=10).programs[0]
        assert program.content_hash == compile_circuit(
            circuit, lab_backend.snapshot, lab_backend.channels).content_hash


def test_the_key_reads_angles_to_the_bit_and_leaves_out_what_it_cannot_read() -> None:
    def rz(angle) -> QuantumCircuit:
        qc = QuantumCircuit(1)
        qc.rz(angle, 0)
        return qc

    assert circuit_key(rz(0.5)) == circuit_key(rz(0.5))
    assert circuit_key(rz(0.0)) != circuit_key(rz(-0.0))
    assert circuit_key(rz(0.5)) != circuit_key(rz(np.nextafter(0.5, 1.0)))
    assert circuit_key(rz(Parameter("t"))) is None
    assert circuit_key(rz(Parameter("t")).assign_parameters([0.5])) is not None
    dynamic = QuantumCircuit(1, 1)
    dynamic.measure(0, 0)
    with dynamic.if_test((dynamic.clbits[0], 1)):
        dynamic.x(0)
    assert circuit_key(dynamic) is None
    swapped = QuantumCircuit(2)
    swapped.sx(1)
    plain = QuantumCircuit(2)
    plain.sx(0)
    assert circuit_key(swapped) != circuit_key(plain)
    delays = [QuantumCircuit(1), QuantumCircuit(1)]
    delays[0].delay(100, 0, unit="dt")
    delays[1].delay(100, 0, unit="ns")
    assert circuit_key(delays[0]) != circuit_key(delays[1])


def test_a_new_calibration_or_option_empties_the_cache() -> None:
    compiled = CompiledPrograms()
    made = []

    class Program(str):
        def with_header(self, header):
            return self

    def compile_all(tag):
        def run():
            made.append(tag)
            return [Program(tag)]
        return run

    qc = QuantumCircuit(1)
    qc.sx(0)
    old, new = object(), object()
    compiled.compile([qc], (old,), ("alap",), compile_all("a"))
    assert compiled.compile([qc], (old,), ("alap",), compile_all("b")) == ["a"]
    assert made == ["a"]
    compiled.compile([qc], (new,), ("alap",), compile_all("c"))  # another snapshot object
    compiled.compile([qc], (new,), ("asap",), compile_all("d"))  # another option
    assert made == ["a", "c", "d"]
    assert (compiled.hits, compiled.misses) == (1, 3)
    many = [qc] * (MAX_CIRCUITS + 1)
    compiled.compile(many, (new,), ("asap",), compile_all("e"))  # a sweep: not read
    assert made[-1] == "e" and compiled.hits == 1


def test_a_circuit_the_compiler_refuses_is_refused_again(lab_backend) -> None:
    from labqpu.errors import InvalidRunInputError

    qc = QuantumCircuit(1, 1)
    qc.h(0)  # not native: refused, and nothing is kept
    qc.measure(0, 0)
    for _ in range(2):
        with pytest.raises(InvalidRunInputError, match="'h'"):
            lab_backend.run(qc, shots=10)
