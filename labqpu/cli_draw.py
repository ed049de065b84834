"""``labqpu draw`` and the circuit files the ``labqpu`` command reads (:mod:`labqpu.cli`).

A circuit file is an OpenQASM 2 or 3 file, or a Python file that defines a ``QuantumCircuit``
named ``circuit`` or ``qc``. ``labqpu run`` takes a Python file as a circuit file when it
imports only Qiskit, numpy and the standard library's number modules, has no ``__main__``
block and defines ``circuit`` or ``qc`` in its own scope (:func:`is_circuit_script`); it runs
any other file as a script.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import io
import math
import os

# runpy.run_path imports pkgutil when it runs a file: imported first, a pkgutil.py in the
# file's folder (first on sys.path then) cannot stand in for it.
import pkgutil  # noqa: F401
import re
import runpy
import sys
import traceback
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from labqpu.cli_options import not_a_file

#: The most qubits, and the most classical bits, a circuit file may declare: Qiskit builds a
#: file's registers whole before any device's size is checked (a review's six-line file
#: declaring 10**9 qubits took the host's memory).
MAX_FILE_BITS = 65_536

_COMMENTS = re.compile(r"//[^\n]*|/\*.*?\*/", re.S)
#: OpenQASM 2 and 3 register declarations (``qreg q[5];``, ``qubit[5] q;``, ``bit[2] c;``):
#: (kind, size) in groups 1 and 2 or 3 and 4.
_REGISTERS = re.compile(r"\b(qreg|creg)\s+[^\W\d]\w*\s*\[([^\]]*)\]"
                        r"|\b(qubit|bit)\s*\[([^\]]*)\]")
#: Leading zeros of a decimal literal (``0100``), which OpenQASM reads and Python does not.
_LEADING_ZEROS = re.compile(r"(?<![\w.])0+(?=\d)")
#: OpenQASM 3 physical qubits (``$12``: Qiskit makes qubits 0 to 12).
_PHYSICAL = re.compile(r"\$(\d+)")


def _size(designator: str) -> int | None:
    """A register's size as Qiskit's OpenQASM importers read it (integer literals, + - * /,
    parentheses); None for anything else, which they refuse themselves."""
    def value(node: ast.AST) -> int:
        if isinstance(node, ast.Constant) and type(node.value) is int:
            return node.value
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub | ast.UAdd):
            return -value(node.operand) if isinstance(node.op, ast.USub) else value(node.operand)
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add | ast.Sub | ast.Mult
                                                      | ast.Div):
            a, b = value(node.left), value(node.right)
            return (a + b if isinstance(node.op, ast.Add) else a - b
                    if isinstance(node.op, ast.Sub) else a * b
                    if isinstance(node.op, ast.Mult) else a // b if b else 0)
        raise ValueError("not a constant integer")

    try:
        return value(ast.parse(_LEADING_ZEROS.sub("", designator.strip()), mode="eval").body)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return None


def declared_bits(text: str) -> tuple[int, int]:
    """(qubits, classical bits) the OpenQASM program ``text`` declares, read without building
    them (comments left out)."""
    qubits = clbits = 0
    code = _COMMENTS.sub(" ", text)
    for match in _REGISTERS.finditer(code):
        kind, size = (match.group(1), match.group(2)) if match.group(1) \
            else (match.group(3), match.group(4))
        n = max(_size(size) or 0, 0)
        if kind in ("qreg", "qubit"):
            qubits += n
        else:
            clbits += n
    for digits in _PHYSICAL.findall(code):  # a long digit string is beyond any limit
        qubits = max(qubits, int(digits) + 1 if len(digits) < 12 else 10 ** 12)
    return qubits, clbits


def load_circuit(path: Path):
    """The circuit of an OpenQASM 2 or 3 file (the version line decides); a file that does not
    parse, or declares more than :data:`MAX_FILE_BITS` qubits or classical bits, raises
    ``QiskitError`` with the parser's message (or the count) and the file name."""
    import qiskit.qasm2
    import qiskit.qasm3
    from openqasm3.parser import QASM3ParsingError
    from qiskit.exceptions import QiskitError

    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise QiskitError(f"{path}: not a valid OpenQASM program: not UTF-8 text") from exc
    for count, what in zip(declared_bits(text), ("qubits", "classical bits"), strict=True):
        if count > MAX_FILE_BITS:
            raise QiskitError(f"{path}: declares {count} {what}; labqpu reads circuit files "
                              f"of at most {MAX_FILE_BITS} (a lab device has far fewer "
                              "qubits)")
    version = next((words[1].rstrip(";") for words in map(str.split, text.splitlines())
                    if len(words) > 1 and words[0] == "OPENQASM"), None)
    code = [line for line in text.splitlines() if line.strip() and
            not line.strip().startswith("//")]
    if not code:
        raise QiskitError(f"{path}: not a valid OpenQASM program: it holds no statement")
    if version is not None and not version.startswith(("2", "3")):
        raise QiskitError(f"{path}: OpenQASM {version} is not supported (2 and 3 are)")
    parser_output = io.StringIO()  # the OpenQASM 3 parser prints its syntax errors
    try:
        with contextlib.redirect_stderr(parser_output):
            if version is not None and version.startswith("2"):
                circuit = qiskit.qasm2.loads(  # an include beside the file, then here
                    text, include_path=(path.resolve().parent, "."),
                    custom_instructions=qiskit.qasm2.LEGACY_CUSTOM_INSTRUCTIONS)
            else:
                circuit = qiskit.qasm3.loads(text)
    except (QiskitError, QASM3ParsingError, AttributeError, ValueError, TypeError) as exc:
        # The OpenQASM 3 importer fails on some inputs (empty, comments only) with plain
        # Python errors: each is still a file that does not parse.
        reason = (getattr(exc, "message", None) or parser_output.getvalue() or str(exc)
                  or _syntax_error_at(exc))
        raise QiskitError(f"{path}: not a valid OpenQASM {version or 3} program: "
                          f"{' '.join(reason.split())}") from exc
    circuit.name = path.stem
    return circuit


def _syntax_error_at(exc: BaseException) -> str:
    """Where the OpenQASM 3 parser stopped, from the token its ANTLR error carries (its own
    ``QASM3ParsingError`` has no message: a review's case said only "syntax error")."""
    cause: BaseException | None = exc
    seen: set[int] = set()
    while cause is not None and id(cause) not in seen:
        seen.add(id(cause))
        for held in (cause, *cause.args):
            token = getattr(held, "offendingToken", None)
            if token is not None and getattr(token, "line", None) is not None:
                what = "end of file" if token.text == "<EOF>" else repr(token.text)
                return (f"syntax error at line {token.line}, column {token.column + 1}: "
                        f"unexpected {what}")
        cause = cause.__cause__ or cause.__context__
    return "syntax error"


#: The names under which a Python circuit file defines its circuit, in the order looked for.
CIRCUIT_NAMES = ("circuit", "qc")


#: The modules (top-level names) a Python file may import and still be a circuit file for
#: ``labqpu run``: Qiskit, numpy and the standard library's number and collection modules. A
#: file that imports anything else (labqpu, a lab's own package wrapping it, a helper beside
#: it, an option parser) may run jobs or take options of its own: it runs as a script.
CIRCUIT_FILE_MODULES = frozenset({
    "__future__", "qiskit", "numpy", "math", "cmath", "fractions", "decimal", "random",
    "itertools", "functools", "operator", "collections", "dataclasses", "enum", "typing"})
#: Names whose use makes a file a script: a ``__main__`` block, imports and code made at run
#: time.
_SCRIPT_NAMES = frozenset({"__name__", "__import__", "exec", "eval", "compile"})


def _walk(tree: ast.Module, children: Callable[[ast.AST], Iterable[ast.AST]]
          ) -> list[ast.AST]:
    """The module's statements and, through ``children`` (the nodes to visit under each),
    what lies under them."""
    out, todo = [], list(tree.body)
    while todo:
        node = todo.pop()
        out.append(node)
        todo.extend(children(node))
    return out


#: Nodes whose bodies have a scope of their own (the names bound there are theirs).
_OWN_SCOPE = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda, ast.ListComp,
              ast.SetComp, ast.DictComp, ast.GeneratorExp)


def _module_level(tree: ast.Module) -> list[ast.AST]:
    """Every node of the module's own scope: not inside a function, class or lambda body or a
    comprehension (whose names are theirs), nor an annotation without a value (it binds
    nothing)."""
    return _walk(tree, lambda node: () if isinstance(node, _OWN_SCOPE) or (
        isinstance(node, ast.AnnAssign) and node.value is None) else ast.iter_child_nodes(node))


def _parsed(path: Path, command: str) -> ast.Module:
    """``path``'s syntax tree, compiled once to find what the parser lets through (a
    ``return`` outside a function); ``ValueError`` (one line, ``labqpu <command>: ...``) for a
    file that does not compile."""
    try:
        source = path.read_bytes()
        tree = ast.parse(source, filename=str(path))
        compile(tree, str(path), "exec")
    except SyntaxError as exc:
        where = f"{path}" if exc.lineno is None else f"{path}, line {exc.lineno}"
        raise ValueError(f"labqpu {command}: {where}: SyntaxError: {exc.msg}") from exc
    except ValueError as exc:
        raise ValueError(f"labqpu {command}: {path}: not Python source: {exc}") from exc
    return tree


def is_circuit_script(path: Path) -> bool:
    """True for a Python file that ``labqpu run`` takes as a circuit file: it imports only
    :data:`CIRCUIT_FILE_MODULES`, uses none of ``__name__`` (no ``__main__`` block),
    ``__import__``, ``exec``, ``eval`` and ``compile``, and its own scope (not a function's or
    class's) binds one of :data:`CIRCUIT_NAMES` (an assignment, a ``for`` or ``with`` target).
    Any other file is a script.

    Raises:
        ValueError: the file does not compile (one line naming the line and the error).
    """
    tree = _parsed(path, "run")
    return _script_reason(tree) is None and any(
        isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store)
        and node.id in CIRCUIT_NAMES for node in _module_level(tree))


def script_reason(path: Path) -> str | None:
    """Why ``path`` (a .py that compiles) is not a circuit file though it may define one
    (``"it imports time"``), or None when its imports and names allow one."""
    return _script_reason(_parsed(path, "run"))


def imports_labqpu(path: Path) -> bool:
    """Whether ``path`` (a .py that compiles) imports a labqpu module anywhere: a script that
    works with labqpu itself, not a circuit file that missed the rules."""
    return any(
        name.split(".")[0] == "labqpu"
        for node in ast.walk(_parsed(path, "run"))
        for name in ([alias.name for alias in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom)
                     and not node.level else []))


def _is_main_test(test: ast.expr) -> bool:
    """Whether an ``if`` with this test runs only as ``__main__``: ``__name__ == "__main__"``
    (either way round), alone or as a term of an ``and``."""
    if isinstance(test, ast.BoolOp) and isinstance(test.op, ast.And):
        return any(_is_main_test(term) for term in test.values)
    if not (isinstance(test, ast.Compare) and len(test.ops) == 1
            and isinstance(test.ops[0], ast.Eq)):
        return False
    sides = [test.left, *test.comparators]
    return any(isinstance(n, ast.Name) and n.id == "__name__" for n in sides) and any(
        isinstance(n, ast.Constant) and n.value == "__main__" for n in sides)


def _run_when_read(tree: ast.Module) -> list[ast.AST]:
    """The nodes that run when the file is read as a module (``runpy`` under another name):
    all but the bodies of its ``if __name__ == "__main__":`` blocks (their ``else`` runs) and
    of its functions (their decorators and defaults run)."""
    def children(node: ast.AST) -> Iterable[ast.AST]:
        if isinstance(node, ast.If) and _is_main_test(node.test):
            return node.orelse
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
            return [d for d in (*node.args.defaults, *node.args.kw_defaults,
                                *getattr(node, "decorator_list", ())) if d]
        return ast.iter_child_nodes(node)

    return _walk(tree, children)


def _script_reason(tree: ast.Module, nodes: Iterable[ast.AST] | None = None) -> str | None:
    """Why the file (``nodes`` of it: all by default) is not a circuit file, or None."""
    for node in ast.walk(tree) if nodes is None else nodes:
        if isinstance(node, ast.ImportFrom) and node.level:
            return "it imports from its own package (a relative import)"
        modules = ([alias.name for alias in node.names] if isinstance(node, ast.Import)
                   else [node.module or "."] if isinstance(node, ast.ImportFrom) else [])
        other = [m for m in modules if m.split(".")[0] not in CIRCUIT_FILE_MODULES]
        if other:
            return (f"it imports {other[0]} (a circuit file imports only qiskit, numpy and "
                    "the standard library's number modules)")
        if isinstance(node, ast.Name) and node.id in _SCRIPT_NAMES:
            return (f"it uses {node.id} (a circuit file has no __main__ block and no "
                    "__import__, exec, eval or compile)")
    return None


@contextlib.contextmanager
def as_run_from_the_command_line(path: Path, argv: list[str]) -> Iterator[None]:
    """Inside, ``sys.argv`` is ``argv`` and the file's directory is first on ``sys.path``, as
    ``python FILE ARGS`` has them; both are put back on exit."""
    saved_argv, saved_path = sys.argv, list(sys.path)
    sys.argv = argv
    sys.path.insert(0, str(path.resolve().parent))
    try:
        yield
    finally:
        sys.argv = saved_argv
        sys.path[:] = saved_path


def load_circuit_file(path: Path, command: str):
    """The circuit a .py file defines (as ``circuit`` or ``qc``; its ``__main__`` block does
    not run, its ``sys.argv`` is its path alone) or a .qasm file holds; one left with Qiskit's
    generated name (``circuit-57``) is named after the file; a file that defines both names
    has ``circuit`` used, which stderr says. ``ValueError`` (one line, starting
    ``labqpu <command>:``) for a file of another kind, one that fails or exits (where) or one
    without a circuit.

    ``labqpu run`` reads only circuit files this way (:func:`is_circuit_script`). Any other
    ``command`` (``draw``) also reads a script whose imports and work outside function
    bodies are in an ``if __name__ == "__main__":`` block (:func:`_run_when_read`), and
    refuses any other: reading it could run its jobs (on the rack) and write its files."""
    from qiskit import QuantumCircuit

    if not path.is_file():
        raise FileNotFoundError(not_a_file(path))
    if path.suffix.lower() == ".qasm":
        return load_circuit(path)
    if path.suffix.lower() != ".py":
        raise ValueError(f"labqpu {command}: give a .py or .qasm file, got {path}")
    tree = _parsed(path, command)
    reason = _script_reason(tree, _run_when_read(tree))
    if reason is not None:
        raise ValueError(
            f"labqpu {command}: {path} is a script, and what runs when it is read for its "
            f"circuit (all but its `if __name__ == \"__main__\":` block and function bodies) "
            f"{reason.removeprefix('it ')}: reading it could run jobs or write files. Put that "
            "work and those imports in such a block, or the circuit in a file of its own")
    try:
        with as_run_from_the_command_line(path, [str(path)]):
            namespace = runpy.run_path(str(path), run_name=f"labqpu_{command}")
    except (Exception, SystemExit) as exc:  # the user's file failed: say where, in one line
        lines = [f.lineno for f in traceback.extract_tb(exc.__traceback__)
                 if Path(f.filename) == path]
        where = f"{path}, line {lines[-1]}" if lines else str(path)
        what = (f"it exited (code {exc.code}) while it was read for its circuit"
                if isinstance(exc, SystemExit) else f"{type(exc).__name__}: {exc}")
        raise ValueError(" ".join(f"labqpu {command}: {where}: {what}".split())) from exc
    defined = [n for n in CIRCUIT_NAMES if isinstance(namespace.get(n), QuantumCircuit)]
    if defined:
        circuit = namespace[defined[0]]
        if len(defined) > 1:  # a review's case: it ran one of the two without a word
            print(f"labqpu {command}: {path} defines both `{defined[0]}` and `{defined[1]}`: "
                  f"using `{defined[0]}`", file=sys.stderr)
        if re.fullmatch(rf"{QuantumCircuit.prefix}-\d+", circuit.name):
            circuit.name = path.stem
        return circuit
    unrun = " (its `if __name__ == \"__main__\":` block does not run)" if command == "draw" else ""
    raise ValueError(f"labqpu {command}: {path} defines no QuantumCircuit named `circuit` or "
                     f"`qc`{unrun}")


#: The resolutions ``labqpu draw --dpi`` takes (an 11-inch figure at 1200 dpi is 13 200 pixels
#: wide).
DRAW_DPI = (10, 1200)


def _draw_option_problem(args: argparse.Namespace) -> str | None:
    """What is wrong with ``labqpu draw``'s --dpi, --time-range-ns and --layout, or None."""
    if not DRAW_DPI[0] <= args.dpi <= DRAW_DPI[1]:
        return f"--dpi {args.dpi}: give a resolution from {DRAW_DPI[0]} to {DRAW_DPI[1]}"
    if args.time_range_ns is not None:
        start, stop = args.time_range_ns
        if not (math.isfinite(start) and math.isfinite(stop) and start < stop):
            return (f"--time-range-ns {start:g} {stop:g}: give two finite times in ns, START "
                    "before STOP")
    if args.layout is not None and len(set(args.layout)) != len(args.layout):
        return f"--layout {' '.join(map(str, args.layout))}: a qubit is named twice"
    return None


def parameter_problem(circuit) -> str | None:
    """Why the command line cannot run or draw ``circuit``: parameters it leaves unbound (an
    OpenQASM ``input``), which it has no way to give values to, or a NaN or infinite one
    (Qiskit's own passes failed on it with a bare "NoConvergence" in a two-qubit circuit,
    before labqpu's check, which names the gate); None when there is neither."""
    if circuit.parameters:
        names = ", ".join(sorted(p.name for p in circuit.parameters))
        return (f"circuit {circuit.name!r} has unbound parameter(s) {names}, and the command "
                "line gives them no values: write values into the file in their place (an "
                "OpenQASM input gets none from here), or run the circuit from Python with "
                "backend.run(circuit, parameter_binds=[{...}])")
    from qiskit.converters import circuit_to_dag
    from qiskit.transpiler.exceptions import TranspilerError

    from labqpu.backend.plugins import FiniteParameters

    try:
        FiniteParameters(qubits="qubit").run(circuit_to_dag(circuit))
    except TranspilerError as exc:
        return f"circuit {circuit.name!r}: {exc.message}"
    return None


def draw_command(args: argparse.Namespace) -> int:
    """``labqpu draw FILE``: the PNG of the program ``run()`` would play for the circuit in
    FILE (exit code 0; 2 for a bad file or option, with one line on stderr)."""
    from qiskit import transpile

    from labqpu import LabProvider

    try:
        circuit = load_circuit_file(Path(args.file), "draw")
    except ValueError as exc:
        print(str(exc), file=sys.stderr)
        return 2
    problem = parameter_problem(circuit)
    if problem:
        print(f"labqpu draw: {problem}", file=sys.stderr)
        return 2
    name = Path(args.file).with_suffix(".png").name
    out = Path(args.output or name)
    if args.output and (out.is_dir() or args.output.endswith(os.sep)):
        out = out / name  # into the directory, named after the circuit's file (it was DIR.png)
    elif not out.suffix:  # matplotlib writes PNG and adds the suffix
        out = out.with_name(out.name + ".png")
    problem = _draw_option_problem(args)
    if problem:
        print(f"labqpu draw: {problem}", file=sys.stderr)
        return 2
    from matplotlib.backend_bases import FigureCanvasBase

    formats = FigureCanvasBase.get_supported_filetypes()
    if out.suffix and out.suffix.lower().lstrip(".") not in formats:  # none: PNG
        print(f"labqpu draw: -o {out}: give an image file ending in one of "
              f"{', '.join('.' + f for f in sorted(formats))}", file=sys.stderr)
        return 2
    if not out.resolve().parent.is_dir():
        print(f"labqpu draw: -o {out}: directory {out.resolve().parent} does not exist",
              file=sys.stderr)
        return 2
    if not os.access(out.resolve().parent, os.W_OK):
        print(f"labqpu draw: -o {out}: directory {out.resolve().parent} cannot be written "
              "to", file=sys.stderr)
        return 2
    if args.layout is not None and len(args.layout) != circuit.num_qubits:
        print(f"labqpu draw: --layout {' '.join(map(str, args.layout))}: give one physical "
              f"qubit for each of the circuit's {circuit.num_qubits} qubits", file=sys.stderr)
        return 2
    with LabProvider(args.config, simulator=args.simulator or None) as provider:
        backend = provider.backend()
        if circuit.num_qubits > backend.num_qubits:
            print(f"labqpu draw: the {circuit.num_qubits}-qubit circuit {circuit.name!r} does "
                  f"not fit {backend.name}, which has {backend.num_qubits} qubits",
                  file=sys.stderr)
            return 2
        if args.layout is not None and not all(0 <= q < backend.num_qubits
                                               for q in args.layout):
            print(f"labqpu draw: --layout {' '.join(map(str, args.layout))}: {backend.name} "
                  f"has qubits 0-{backend.num_qubits - 1}", file=sys.stderr)
            return 2
        native = transpile(circuit, backend, optimization_level=args.optimization_level,
                           initial_layout=args.layout, seed_transpiler=1)
        program = backend.compile(native)  # what run() plays: feed-forward, active reset
        time_range = tuple(args.time_range_ns) if args.time_range_ns else None
        fig = program.draw(channels=backend.channels, time_range_ns=time_range)
        fig.savefig(out, dpi=args.dpi)
    print(f"{out}: {program.header.get('name')} on {backend.name}, {program.duration_samples} "
          f"samples, {len(program.play_port)} plays, {len(program.acq_port)} acquisitions")
    return 0
