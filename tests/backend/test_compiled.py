"""A circuit run again under the same calibration gets the program compiled before (with its own
header), and anything the compiler reads that changes makes it compile anew."""

from __future__ import annotations

import numpy as np
import pytest
from qiskit import QuantumCircuit, transpile
from qiskit.circuit import Parameter
from qiskit.circuit.random import random_circuit

from labqpu.backend.compiled import (
    MAX_CIRCUITS,
    MAX_INSTRUCTIONS,
    CompiledPrograms,
    circuit_key,
)
from labqpu.pulse.compiler import compile_circuit


def _ran(job):
    """The job's (one) program, once the job has ended: a test leaves nothing queued."""
    job.result(timeout=60)
    return job.programs[0]


@pytest.fixture(autouse=True)
def fresh_cache(lab_backend, monkeypatch) -> None:
    """Each test starts with an empty cache: the session's backend ran other tests' jobs, and
    a run of misses makes the cache stop reading keys for a while (``MISS_STREAK``)."""
    monkeypatch.setattr(lab_backend, "_compiled", CompiledPrograms())


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
    before = _ran(lab_backend.run(circuit, shots=20))
    circuit.x(1)  # changed in place after its run
    after = _ran(lab_backend.run(circuit, shots=20))
    assert after.content_hash == compile_circuit(circuit, lab_backend.snapshot,
                                                 lab_backend.channels).content_hash
    assert after.content_hash != before.content_hash
    other = _ran(lab_backend.run(_native(lab_backend, angle=0.4), shots=20))
    assert other.content_hash != before.content_hash


def test_circuits_that_differ_only_in_their_classical_bits_get_their_own_programs(
        lab_backend) -> None:
    programs = []
    for clbits in ([0, 1], [1, 0]):
        qc = QuantumCircuit(2, 2)
        qc.x(0)
        qc.measure([0, 1], clbits)
        native = transpile(qc, lab_backend, initial_layout=[0, 1])
        programs.append(_ran(lab_backend.run(native, shots=100)))
        counts = lab_backend.run(native, shots=100).result(timeout=60).get_counts()
        assert max(counts, key=counts.get) == ("01" if clbits == [0, 1] else "10")
    pairs = [set(zip(p.acq_qubit.tolist(), p.acq_clbit.tolist(), strict=True))
             for p in programs]
    assert pairs == [{(0, 0), (1, 1)}, {(0, 1), (1, 0)}]


def test_every_program_from_the_cache_is_the_compilers(lab_backend) -> None:
    """Random circuits, each run twice among the others: the program each run gets equals
    ``compile_circuit``'s for that circuit, byte for byte (content hash)."""
    transpiled = (transpile(random_circuit(3, 3, measure=True, seed=seed), lab_backend,
                            seed_transpiler=seed) for seed in range(100))
    circuits = [c for c in transpiled if len(c.data) <= MAX_INSTRUCTIONS][:8]
    assert len(circuits) == 8
    hits = lab_backend._compiled.hits
    for circuit in circuits + circuits[::-1]:
        program = _ran(lab_backend.run(circuit, shots=10))
        assert program.content_hash == compile_circuit(
            circuit, lab_backend.snapshot, lab_backend.channels).content_hash
    assert lab_backend._compiled.hits >= hits + 8  # the second time round, from the cache


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


class _Program(str):
    """A stand-in program: its text names what compiled it."""

    def with_header(self, header):
        return _Program(f"{self}|{header['name']}")


def _sx(n: int = 1, name: str = "c") -> QuantumCircuit:
    qc = QuantumCircuit(1, name=name)
    for _ in range(n):
        qc.sx(0)
    return qc


def test_another_calibration_or_option_compiles_anew_and_the_first_is_still_held() -> None:
    compiled = CompiledPrograms()
    made = []

    def compile_all(tag):
        def run():
            made.append(tag)
            return [_Program(tag)]
        return run

    qc = _sx()
    old, new = object(), object()
    assert compiled.compile([qc], (old,), ("alap",), compile_all("a")) == ["a"]
    assert compiled.compile([qc], (old,), ("alap",), compile_all("b")) == ["a|c"]
    compiled.compile([qc], (new,), ("alap",), compile_all("c"))  # another snapshot object
    compiled.compile([qc], (new,), ("asap",), compile_all("d"))  # another option
    assert compiled.compile([qc], (old,), ("alap",), compile_all("e")) == ["a|c"]
    assert made == ["a", "c", "d"]
    assert (compiled.hits, compiled.misses) == (2, 3)
    compiled.compile([qc] * (MAX_CIRCUITS + 1), (new,), ("asap",), compile_all("f"))  # a sweep
    long = _sx(MAX_INSTRUCTIONS + 1)
    compiled.compile([long], (new,), ("asap",), compile_all("g"))
    compiled.compile([long], (new,), ("asap",), compile_all("h"))  # not kept: compiled again
    assert made[-3:] == ["f", "g", "h"] and compiled.hits == 2


def test_work_that_never_repeats_a_circuit_stops_reading_keys_for_a_while(monkeypatch) -> None:
    """After ``MISS_STREAK`` jobs in a row that missed, the next ``SKIP_JOBS`` jobs read no
    key (and keep nothing); a repeated circuit is found again after that."""
    import labqpu.backend.compiled as compiled_module

    keyed = []
    real = compiled_module.circuit_key
    monkeypatch.setattr(compiled_module, "circuit_key",
                        lambda circuit: keyed.append(circuit.name) or real(circuit))
    streak, skip = compiled_module.MISS_STREAK, compiled_module.SKIP_JOBS
    compiled = CompiledPrograms()
    circuits = [_sx(1, name=f"c{n}") for n in range(streak + skip + 1)]
    for n, qc in enumerate(circuits):  # each one new: its rz angle differs
        qc.rz(0.001 * n, 0)
        compiled.compile([qc], ("ctx",), (), lambda n=n: [_Program(f"p{n}")])
    last = len(circuits) - 1
    assert keyed == [f"c{n}" for n in range(streak)] + [f"c{last}"]  # none while skipping
    assert compiled.compile([circuits[last]], ("ctx",), (), lambda: [_Program("x")]) == [
        f"p{last}|c{last}"]


def test_threads_compiling_at_once_each_get_their_circuits_program() -> None:
    import threading

    compiled = CompiledPrograms(capacity=8)  # small: entries are dropped while others read
    circuits = [_sx(n, name=f"c{n}") for n in range(1, 21)]
    wrong = []

    def work(seed: int) -> None:
        rng = np.random.default_rng(seed)
        for _ in range(300):
            n = int(rng.integers(1, 21))
            (program,) = compiled.compile([circuits[n - 1]], ("ctx",), (), lambda n=n: [
                _Program(f"sx{n}")])
            if not program.startswith(f"sx{n}"):
                wrong.append((n, program))

    threads = [threading.Thread(target=work, args=(seed,)) for seed in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert wrong == []
    assert compiled.hits > 0 and compiled.hits + compiled.misses == 1200


def test_a_circuit_the_compiler_refuses_is_refused_again(lab_backend) -> None:
    from labqpu.errors import InvalidRunInputError

    qc = QuantumCircuit(1, 1)
    qc.h(0)  # not native: refused, and nothing is kept
    qc.measure(0, 0)
    for _ in range(2):
        with pytest.raises(InvalidRunInputError, match="'h'"):
            lab_backend.run(qc, shots=10)


@pytest.mark.parametrize("phase", [float("nan"), float("inf")])
def test_a_non_finite_global_phase_is_refused_after_the_same_circuit_ran(lab_backend,
                                                                         phase) -> None:
    from labqpu.errors import InvalidRunInputError

    qc = _native(lab_backend)
    lab_backend.run(qc, shots=10).result(timeout=60)
    bad = qc.copy()
    bad.global_phase = phase  # the key leaves the phase out: the check must still run
    assert circuit_key(bad) is None
    with pytest.raises(InvalidRunInputError, match="global_phase nan must be finite"):
        lab_backend.run(bad, shots=10)
    assert lab_backend._compiled.hits == 0
