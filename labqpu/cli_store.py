"""``labqpu calibrate history|diff|rollback``: the calibration store alone, no instrument
touched."""

from __future__ import annotations

import argparse
import json
import sys

__all__ = ["HISTORY_ROWS", "STORE_COMMANDS", "store_command"]

#: Rows ``history`` prints unless ``--limit`` says otherwise.
HISTORY_ROWS = 50


#: ``labqpu calibrate <command> ...`` that read or roll back the store, with their arguments.
STORE_COMMANDS = {"history": (), "diff": ("A", "B"), "rollback": ("ID",)}


def store_command(args: argparse.Namespace) -> int:
    """``labqpu calibrate history|diff A B|rollback ID``: the store alone, no instrument
    touched."""
    from labqpu.backend.provider import seed_store
    from labqpu.rack.config import load_config, resolve_config_path
    from labqpu.rack.limits import wiring_limits
    from labqpu.store import CalibrationStore

    action, *rest = args.nodes
    wanted = STORE_COMMANDS[action]
    foreign = [flag for flag, given in (
        ("--all", args.all), ("--qubits", args.qubits), ("--force", args.force),
        ("--bootstrap", args.bootstrap), ("--rb", args.rb), ("--no-rb", args.no_rb),
        ("--rb-lengths-1q", args.rb_lengths_1q), ("--rb-lengths-2q", args.rb_lengths_2q),
        ("--rb-seeds", args.rb_seeds), ("--watch", args.watch), ("--interval", args.interval),
        ("--rounds", args.rounds), ("--rb-every", args.rb_every), ("--clock", args.clock),
        ("--design", args.design), ("--shots", args.shots is not None), ("--export", args.export),
        ("--param", args.param and action != "history"),
        ("--limit", args.limit is not None and action != "history")) if given]
    if foreign:
        takes = ("; history takes --param, --qubit, --pair, --gate, --since and --limit"
                 if action == "history" else "")
        print(f"labqpu calibrate {action}: {', '.join(foreign)}: not for {action}, which works "
              f"on whole snapshots of the store{takes}", file=sys.stderr)
        return 2
    if len(rest) != len(wanted) or not all(r.isdigit() for r in rest):
        usage = " ".join([action, *wanted])
        what = " (snapshot ids are whole numbers)" if wanted else " (no further words)"
        print(f"labqpu calibrate {action}: usage: labqpu calibrate {usage}{what}, got "
              f"{' '.join(rest) or 'nothing'}", file=sys.stderr)
        return 2
    ids = [int(r) for r in rest]
    selectors = [f"--{name}" for name in ("qubit", "pair", "gate", "since")
                 if getattr(args, name) is not None]
    if selectors and (action != "history" or args.param is None):
        print(f"labqpu calibrate {action}: {'/'.join(selectors)} select(s) one parameter's "
              "history: use them with history --param NAME", file=sys.stderr)
        return 2
    if args.since is not None:
        from labqpu.errors import InvalidSnapshotError
        from labqpu.store.validation import check_timestamp

        try:
            check_timestamp(args.since)
        except InvalidSnapshotError as exc:
            print(f"labqpu calibrate {action}: --since {args.since}: {exc.message}",
                  file=sys.stderr)
            return 2
    limit = HISTORY_ROWS if args.limit is None else args.limit
    config = load_config(resolve_config_path(args.config)[0])
    with CalibrationStore(config.store_path, validators=(wiring_limits(config),)) as store:
        seed_store(store, config)  # as a provider would: the history starts at the seed
        if action == "rollback":
            newest = store.latest_id()
            snapshot = store.rollback(ids[0])
            if snapshot.snapshot_id == newest:
                print(f"the newest snapshot, {newest}, already holds the calibration of "
                      f"snapshot {ids[0]}; nothing committed ({config.store_path})")
            else:
                print(f"committed snapshot {snapshot.snapshot_id}: the calibration of "
                      f"snapshot {ids[0]} is the newest again ({config.store_path})")
        elif action == "diff":
            print(json.dumps(store.diff(*ids), indent=1))
        elif args.param is None:
            infos = store.history(limit=limit)
            if not infos:
                print(f"calibration store {config.store_path} holds no snapshot yet")
            for info in infos:
                parent = "-" if info.parent_id is None else info.parent_id
                print(f"{info.snapshot_id:>5}  {info.created}  parent {parent:>5}  "
                      + (info.notes if info.problem is None else f"CORRUPT: {info.problem}"))
        else:
            subjects = {"qubit": args.qubit, "pair": args.pair,
                        "gate": None if args.gate is None else _gate_key(store, args.gate)}
            chosen = {k: v for k, v in subjects.items() if v is not None}
            if len(chosen) != 1:
                print("labqpu calibrate history: --param needs exactly one of --qubit, --pair, "
                      "--gate", file=sys.stderr)
                return 2
            records = store.parameter_history(args.param, since=args.since, **chosen)
            (kind, key), = chosen.items()
            if not records:
                newest = store.latest()
                held = {"qubit": newest.qubits, "pair": newest.pairs, "gate": newest.gates}[kind]
                if (tuple(sorted(key)) if kind == "pair" else key) not in held:
                    names = [f"{k[0]}-{k[1]}" if kind == "pair" else str(k) for k in sorted(held)]
                    print(f"labqpu calibrate history: snapshot {newest.snapshot_id} has no "
                          f"{kind} {key if kind != 'pair' else '-'.join(map(str, key))} "
                          f"({kind}s: {', '.join(names)})", file=sys.stderr)
                    return 2
            shown = ("edge {}-{}".format(*sorted(key)) if kind == "pair" else f"{kind} {key}")
            print(f"{args.param} of {shown}: {len(records)} measurement(s), newest first")
            for record in records[:limit]:
                print(f"{record.timestamp}  snapshot {record.snapshot_id:>5}  "
                      f"{record.experiment:<24} {record.value!r}")
    return 0


def _gate_key(store, gate: str) -> str:
    """``gate`` as the store names it: a two-qubit gate given the other way round
    (``cz:2-1``) is the edge's key (``cz:1-2``) when the newest snapshot holds only that."""
    name, _, qubits = gate.partition(":")
    parts = qubits.split("-")
    if len(parts) != 2 or not all(p.isdigit() for p in parts) or store.latest_id() is None:
        return gate
    from labqpu.errors import CorruptSnapshotError

    try:
        newest = store.latest()
    except CorruptSnapshotError:  # the newest readable one: parameter_history skips it
        readable = [info.snapshot_id for info in store.history() if info.problem is None]
        if not readable:
            return gate
        newest = store.get(readable[0])
    if gate in newest.gates:
        return gate
    turned = f"{name}:{parts[1]}-{parts[0]}"
    return turned if turned in newest.gates else gate
