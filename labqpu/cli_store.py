"""``labqpu calibrate history|diff|rollback``: the calibration store alone, no instrument
touched; and ``--export``, a snapshot written to a file."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import stat
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from labqpu.rack.config import LabConfig

__all__ = ["HISTORY_ROWS", "STORE_COMMANDS", "export_snapshot", "file_options_problem",
           "store_command"]

#: Rows ``history`` prints unless ``--limit`` says otherwise.
HISTORY_ROWS = 50


#: ``labqpu calibrate <command> ...`` that read or roll back the store, with their arguments.
STORE_COMMANDS = {"history": (), "diff": ("A", "B"), "rollback": ("ID",)}


def store_command(args: argparse.Namespace) -> int:
    """``labqpu calibrate history|diff A B|rollback ID``: the store alone, no instrument
    touched."""
    from labqpu.backend.provider import seed_store
    from labqpu.errors import LabQpuError
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
    if len(rest) != len(wanted) or not all(r.isascii() and r.isdigit() for r in rest):
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
    with contextlib.ExitStack() as stack:
        path = Path(config.store_path)
        from_seed = _not_made_yet(path)  # answered from the seed it would start from
        if from_seed:
            path = Path(stack.enter_context(tempfile.TemporaryDirectory(
                prefix="labqpu-store-"))) / path.name
        store = stack.enter_context(CalibrationStore(path,
                                                     validators=(wiring_limits(config),)))
        seed_store(store, config)  # as a provider would: the history starts at the seed
        if from_seed:
            print(f"labqpu calibrate {action}: calibration store {config.store_path} does not "
                  "exist yet (the first command that uses the rack creates it"
                  + (f" from {config.seed_snapshot}); answered from what it would start with"
                     if config.seed_snapshot else ")")
                  + ", nothing written", file=sys.stderr)
        try:
            return _on_store(store, args, action, ids, limit, config)
        except LabQpuError as exc:
            if not from_seed:
                raise
            message = getattr(exc, "message", None) or str(exc)  # named as the user knows it
            print(f"labqpu: {message.replace(str(store.path), str(config.store_path))}",
                  file=sys.stderr)
            return 2


def _not_made_yet(path: Path) -> bool:
    """Whether no store is at ``path`` yet and one could be made there: nothing at the path
    (not even a dangling link) and the nearest folder above it that exists is a folder (a
    store path under a file is left for the store to refuse, naming it)."""
    if os.path.lexists(path):
        return False
    above = path.absolute().parent
    while not os.path.lexists(above):
        above = above.parent
    return above.is_dir()


def _on_store(store, args: argparse.Namespace, action: str, ids: list[int], limit: int,
              config: LabConfig) -> int:
    """``action`` (history, diff, rollback) on the opened ``store``; the exit code."""
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
    (``cz:2-1``) is the edge's key (``cz:1-2``) when the newest readable snapshot that holds
    the gate either way holds only that one."""
    name, _, qubits = gate.partition(":")
    parts = qubits.split("-")
    if len(parts) != 2 or not all(p.isascii() and p.isdigit() for p in parts):
        return gate
    turned = f"{name}:{parts[1]}-{parts[0]}"
    for info in store.history():  # newest first; the newest often holds every gate
        if info.problem is not None:
            continue
        gates = store.get(info.snapshot_id).gates
        if gate in gates or turned in gates:
            return gate if gate in gates else turned
    return gate




def file_options_problem(args: argparse.Namespace, config: LabConfig | None) -> str | None:
    """What is wrong with ``--export`` and ``--design`` before anything starts, or None: the
    export's directory must exist, and it must not be the calibration store of ``config``
    (the wiring file, read when ``--export`` is given; or its journal files), any other
    SQLite database, or the file given to ``--config`` or ``--design``, which the export would
    overwrite; the design file must be there. Both
    paths are taken with ``~`` expanded (a shell leaves ``--export=~/x.json`` as it is),
    here and where used."""
    if args.export:
        args.export = str(Path(args.export).expanduser())
        export = Path(args.export)
        if export.is_dir():
            return f"--export {args.export}: is a directory; give a file name"
        folder = export.resolve().parent
        if not folder.is_dir():
            return f"--export {args.export}: directory {folder} does not exist"
        from labqpu.store.files import COMPANIONS, SQLITE_HEADER

        store = config.store_path.resolve()
        if export.resolve() in [store, *(Path(f"{store}{end}") for end in COMPANIONS)]:
            return f"--export {args.export}: is the calibration store; give another file"
        for option, given in (("--config", getattr(args, "config", None)),
                              ("--design", args.design)):
            if given and export.resolve() == Path(given).expanduser().resolve():
                return (f"--export {args.export}: is the file given to {option}, which the "
                        "export would overwrite; give another file")
        try:
            with export.open("rb") as existing:
                if existing.read(len(SQLITE_HEADER)) == SQLITE_HEADER:
                    return (f"--export {args.export}: is an SQLite database (a calibration "
                            "store?), which the export would overwrite; give another file")
        except OSError:
            pass  # none there yet, or unreadable: writing it says what is wrong
    if args.design:
        args.design = str(Path(args.design).expanduser())
        if not Path(args.design).is_file():
            return f"--design {args.design}: no such file"
    return None


def export_snapshot(args: argparse.Namespace, backend, snapshot) -> bool:
    """Write ``snapshot`` (the one committed, or the newest when nothing was) to ``--export``'s
    file, when given, whole or not at all (a file beside it, then renamed), and say which one
    it was. False, with one line on stderr, when the file cannot be written: the snapshot
    stays committed in the store."""
    if not args.export or snapshot is None:
        return True
    text = json.dumps(backend.store.export_json(snapshot.snapshot_id), indent=1) + "\n"
    target = Path(args.export)
    try:
        if target.exists() and not target.is_file():  # a device or a pipe: write it there
            target.write_text(text)
        else:
            _replace(target, text)
    except OSError as exc:
        print(f"labqpu calibrate: cannot write --export {args.export}: "
              f"{exc.strerror or exc}; snapshot {snapshot.snapshot_id} is committed in "
              f"{backend.config.store_path} all the same", file=sys.stderr)
        return False
    print(f"exported snapshot {snapshot.snapshot_id} to {args.export}")
    return True


def _replace(target: Path, text: str) -> None:
    """Write ``text`` to a file beside ``target`` (through a symbolic link: beside what it
    points to), with the mode of the file it replaces (or that a plain write would give), then
    rename it onto it; straight to ``target`` where its folder takes no new file (``/proc``)."""
    target = target.resolve()
    try:
        out = tempfile.NamedTemporaryFile("w", dir=target.parent,  # noqa: SIM115
                                          prefix=f".{target.name}.", delete=False)
    except OSError:
        target.write_text(text)
        return
    try:
        with out:
            out.write(text)
        try:
            mode = stat.S_IMODE(target.stat().st_mode)
        except FileNotFoundError:
            mask = os.umask(0)
            os.umask(mask)
            mode = 0o666 & ~mask
        os.chmod(out.name, mode)
        os.replace(out.name, target)
    finally:
        Path(out.name).unlink(missing_ok=True)
