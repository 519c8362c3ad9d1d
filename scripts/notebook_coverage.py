"""How much of a generated notebook's code runs: executable lines per inlined module, run or not.

Runs every code cell of ``notebooks/NAME.ipynb`` in one namespace, in this process (no kernel,
so the FiftyOne App is never launched), with a line tracer on the notebook's own cells only (in
threads the cells start and in forked worker processes too),
and prints, for each inlined ``lib/`` module and for the recipe, the executable lines it
carries and how many of them ran. "Carried but not run" is what a reader scrolls past and
what issue 17 asks to shrink.

    python -m scripts.notebook_coverage fiftyone_explorer [-p KEY VALUE ...] [--json OUT] [--missed OUT]
        [--by-function [N]]

``--missed OUT`` writes the lines that did not run, with their cell and module, to read what a
notebook carries for other parameters (or never uses). ``--by-function`` lists the functions that
carry most of it, and every run says how many of those lines are error handling (``except`` bodies,
``raise`` statements, ``if`` blocks ending in one): code only bad input runs.

Parameters default to the notebook's own (``-p`` overrides them, e.g. a temporary
``output_dir``); the code paths do not depend on how many clips are used.
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import re
import shutil
import sys
import tempfile
import threading
import time
import types
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _code_lines(code) -> set:
    # line 0 is no source line: CPython 3.11 gives a module's RESUME instruction line 0
    lines = {line for _, _, line in code.co_lines() if line}
    for const in code.co_consts:
        if hasattr(const, "co_lines"):
            lines |= _code_lines(const)
    return lines


def _cell_owner(cell) -> str:
    first = cell["source"].splitlines()[0] if cell["source"] else ""
    match = re.match(r"# @title (lib/[\w/]+\.py):", first)
    if match:
        return match.group(1)
    tags = cell.get("metadata", {}).get("tags", [])
    if "setup" in tags:
        return "(setup cell)"
    if "parameter-check" in tags:
        return "(parameter check)"
    return "(recipe)"


def measure(name: str, parameters: dict | None = None) -> dict:
    """Run notebook ``name`` with a line tracer; return ``{owner: {"lines", "run"}}`` and totals."""
    import nbformat
    from IPython.core.inputtransformer2 import TransformerManager
    from IPython.core.interactiveshell import InteractiveShell

    notebook = nbformat.read(ROOT / "notebooks" / f"{name}.ipynb", as_version=4)
    shell = InteractiveShell.instance()
    transform = TransformerManager().transform_cell
    module = types.ModuleType("__main__")  # what a kernel runs cells in: worker processes find functions here
    namespace = module.__dict__
    namespace["get_ipython"] = lambda: shell
    executable, executed = {}, defaultdict(set)
    owners, sources = {}, {}

    main_pid = os.getpid()
    child_logs = Path(tempfile.mkdtemp(prefix="coverage-workers-"))

    def local(frame, event, arg):
        if event == "line":
            filename, line = frame.f_code.co_filename, frame.f_lineno
            if line not in executed[filename]:
                executed[filename].add(line)
                if os.getpid() != main_pid:  # a forked worker: its lines come back through a file
                    with open(child_logs / f"{os.getpid()}.tsv", "a") as log:
                        log.write(f"{filename}\t{line}\n")
        return local

    def tracer(frame, event, arg):
        return local if frame.f_code.co_filename.startswith("<cell-") else None

    cwd, real_main = os.getcwd(), sys.modules["__main__"]
    sys.modules["__main__"] = module
    os.chdir(ROOT)
    start = time.perf_counter()
    try:
        for index, cell in enumerate(notebook.cells):
            if cell.cell_type != "code":
                continue
            filename = f"<cell-{index:03d}>"
            source = transform(cell.source)
            code = compile(source, filename, "exec")
            executable[filename] = _code_lines(code)
            sources[filename] = source
            owners[filename] = _cell_owner(cell)
            if "parameters" in cell.get("metadata", {}).get("tags", []):
                source = source + "\n" + "\n".join(f"{k} = {v!r}" for k, v in (parameters or {}).items())
                code = compile(source, filename, "exec")
            sys.settrace(tracer)
            threading.settrace(tracer)  # threads the cell starts (thread pools) are traced too
            try:
                exec(code, namespace)  # the notebook's own code, as a kernel would run it
            finally:
                sys.settrace(None)
                threading.settrace(None)
    finally:
        os.chdir(cwd)
        sys.modules["__main__"] = real_main
    for log in sorted(child_logs.glob("*.tsv")):  # lines run only in forked worker processes
        for row in log.read_text().splitlines():
            filename, line = row.rsplit("\t", 1)
            executed[filename].add(int(line))
    shutil.rmtree(child_logs, ignore_errors=True)
    per_owner = defaultdict(lambda: {"lines": 0, "run": 0})
    for filename, lines in executable.items():
        owner = owners[filename]
        per_owner[owner]["lines"] += len(lines)
        per_owner[owner]["run"] += len(lines & executed[filename])
    missed = {
        filename: {"owner": owners[filename], "lines": sorted(lines - executed[filename])}
        for filename, lines in executable.items()
        if lines - executed[filename]
    }
    lib = {k: v for k, v in per_owner.items() if k.startswith("lib/")}
    totals = {
        "lines": sum(v["lines"] for v in per_owner.values()),
        "run": sum(v["run"] for v in per_owner.values()),
        "lib_lines": sum(v["lines"] for v in lib.values()),
        "lib_run": sum(v["run"] for v in lib.values()),
    }
    totals["not_run"] = totals["lines"] - totals["run"]
    totals["lib_not_run"] = totals["lib_lines"] - totals["lib_run"]
    size = (ROOT / "notebooks" / f"{name}.ipynb").stat().st_size
    return {
        "notebook": name,
        "bytes": size,
        "seconds": time.perf_counter() - start,
        "parameters": parameters or {},
        "modules": dict(sorted(per_owner.items())),
        "totals": totals,
        "missed": missed,
        "sources": {filename: sources[filename] for filename in missed},
    }


def missed_text(report: dict) -> str:
    """The lines that did not run, cell by cell: ``<cell-012> lib/core/audio.py`` then ``  42  source``."""
    out = []
    for filename, item in report["missed"].items():
        lines = report["sources"][filename].splitlines()
        out.append(f"{filename} {item['owner']} ({len(item['lines'])} not run)")
        out.extend(f"{n:5d}  {lines[n - 1] if n <= len(lines) else ''}" for n in item["lines"])
    return "\n".join(out) + "\n"


def _error_path_lines(tree) -> set:
    """Lines of error handling: ``except`` bodies, ``raise`` statements and ``if`` blocks that end in one."""
    lines = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ExceptHandler):
            lines.update(range(node.lineno, node.end_lineno + 1))
        elif isinstance(node, ast.Raise):
            lines.update(range(node.lineno, node.end_lineno + 1))
        elif isinstance(node, ast.If) and isinstance(node.body[-1], ast.Raise) and node.body[0].lineno > node.lineno:
            lines.update(range(node.body[0].lineno, node.body[-1].end_lineno + 1))  # the guard's body, not its test
    return lines


def functions_not_run(report: dict) -> list:
    """Lines not run per top-level function or class of each module, most first: ``{"owner", "name",
    "not_run", "error_paths"}``, where ``error_paths`` counts those in ``except`` bodies, ``raise``
    statements and ``if`` blocks that end in a ``raise``: what bad input runs. An upper bound: such lines in a
    function that never ran count too, and so does an ``except`` that is a normal fallback."""
    counts = defaultdict(lambda: [0, 0])
    for filename, item in report["missed"].items():
        tree = ast.parse(report["sources"][filename])
        spans = [(n.lineno, n.end_lineno, n.name) for n in tree.body if hasattr(n, "name")]
        errors = _error_path_lines(tree)
        for line in item["lines"]:
            name = next((s[2] for s in spans if s[0] <= line <= s[1]), "(top level)")
            counts[(item["owner"], name)][0] += 1
            counts[(item["owner"], name)][1] += line in errors
    rows = [{"owner": o, "name": n, "not_run": c[0], "error_paths": c[1]} for (o, n), c in counts.items()]
    return sorted(rows, key=lambda r: (-r["not_run"], r["owner"], r["name"]))


def _value(text: str):
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("name")
    parser.add_argument("-p", "--param", nargs=2, action="append", metavar=("KEY", "VALUE"), default=[])
    parser.add_argument("--json", help="write the report here too")
    parser.add_argument("--missed", help="write the lines that did not run here, with their source, cell by cell")
    parser.add_argument(
        "--by-function",
        type=int,
        nargs="?",
        const=30,
        metavar="N",
        help="also print the N functions with most lines not run (default 30), and how many are error handling",
    )
    args = parser.parse_args(argv)
    parameters = {k: _value(v) for k, v in args.param}
    parameters.setdefault("output_dir", tempfile.mkdtemp(prefix=f"coverage-{args.name}-"))
    report = measure(args.name, parameters)
    print(f"{'module':<44} {'lines':>6} {'run':>6} {'not run':>8}")
    for owner, item in report["modules"].items():
        print(f"{owner:<44} {item['lines']:>6} {item['run']:>6} {item['lines'] - item['run']:>8}")
    t = report["totals"]
    print(
        f"{'total':<44} {t['lines']:>6} {t['run']:>6} {t['not_run']:>8}   "
        f"(lib: {t['lib_lines']} carried, {t['lib_not_run']} not run; notebook {report['bytes'] / 1024:.0f} KiB)"
    )
    if args.missed:
        Path(args.missed).write_text(missed_text(report))
    functions = functions_not_run(report)
    errors = sum(row["error_paths"] for row in functions)
    print(f"of the {t['not_run']} lines not run, {errors} are error handling (except, raise, if ... raise)")
    if args.by_function:
        print(f"\n{'module':<44} {'function or class':<34} {'not run':>8} {'errors':>7}")
        for row in functions[: args.by_function]:
            print(f"{row['owner']:<44} {row['name']:<34} {row['not_run']:>8} {row['error_paths']:>7}")
    report = {k: v for k, v in report.items() if k not in ("missed", "sources")}
    report["totals"]["error_paths_not_run"] = errors
    report["functions_not_run"] = functions
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
