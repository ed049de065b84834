"""A Bell pair on the lab device.

    labqpu run examples/bell.py                 # embedded simulator of lab5
    labqpu run examples/bell.py --config lab.toml
    labqpu run examples/bell.py --config lab-sim.toml --simulator   # its embedded simulator
    labqpu draw examples/bell.py                # the pulse program it plays (no job runs)

labqpu and argparse are imported in ``main``: what runs when the file is read for its circuit
(``labqpu draw``) imports only Qiskit.
"""

from qiskit import QuantumCircuit, transpile

qc = QuantumCircuit(2, 2)
qc.h(0)
qc.cx(0, 1)
qc.measure([0, 1], [0, 1])


def main() -> None:
    import argparse

    from labqpu import LabProvider

    parser = argparse.ArgumentParser()
    parser.add_argument("--config", help="lab.toml of the rack (default: embedded simulator)")
    parser.add_argument("--simulator", action="store_true",
                        help="start the embedded simulator of the --config file")
    parser.add_argument("--shots", type=int, default=2000)
    args = parser.parse_args()
    with LabProvider(args.config, simulator=args.simulator or None) as provider:
        backend = provider.backend()
        native = transpile(qc, backend)
        job = backend.run(native, shots=args.shots)
        counts = job.result(timeout=120).get_counts()
        snapshot = job.result().to_dict()["calibration_snapshot_id"]
    print(f"counts: {dict(sorted(counts.items()))}")
    print(f"P(00) + P(11) = {(counts.get('00', 0) + counts.get('11', 0)) / args.shots:.3f} "
          f"(calibration snapshot {snapshot})")


if __name__ == "__main__":
    main()
