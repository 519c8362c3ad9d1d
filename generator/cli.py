"""The ``audiolens`` command: list, build, check and run the notebooks."""

from __future__ import annotations

import argparse
import ast
import datetime as _dt
import json
import os
import sys
from pathlib import Path

from generator import assemble as asm

KERNEL_NAME = "audiolens"
DEFAULT_TIMEOUT = 3600


def ensure_kernel(quiet: bool = True) -> str:
    """Register (once) a Jupyter kernel named ``audiolens`` that runs this Python; return its name."""
    from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel

    try:
        spec = KernelSpecManager().get_kernel_spec(KERNEL_NAME)
        if spec.argv and os.path.realpath(spec.argv[0]) == os.path.realpath(sys.executable):
            return KERNEL_NAME
    except NoSuchKernel:
        pass
    from ipykernel.kernelspec import install

    install(kernel_name=KERNEL_NAME, display_name="Python (audiolens)", prefix=sys.prefix)
    if not quiet:
        print(f"Registered Jupyter kernel '{KERNEL_NAME}' for {sys.executable}")
    return KERNEL_NAME


def parse_value(text: str):
    """A ``-p KEY VALUE`` value: a Python literal (number, bool, None, list...) or else a string."""
    lowered = text.strip().lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    if lowered in ("none", "null"):
        return None
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def execute_notebook(
    name: str,
    parameters: dict | None = None,
    out_dir: Path | None = None,
    timeout: int = DEFAULT_TIMEOUT,
    build_first: bool = True,
    log_output: bool = False,
) -> Path:
    """Build (optionally) and execute notebook ``name`` with papermill into ``out_dir``.

    The recipe's ``output_dir`` parameter is set to ``out_dir`` so ``results.json`` and figures
    land beside the executed notebook. Returns ``out_dir``; raises papermill's
    ``PapermillExecutionError`` on a failing cell.
    """
    import papermill as pm

    if out_dir is None:
        stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
        out_dir = asm.ROOT / "runs" / name / stamp
    out_dir = Path(out_dir).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    if build_first:
        asm.build([name])
        source = asm.NOTEBOOKS_DIR / f"{name}.ipynb"
    else:  # assemble in memory: parallel test runs never race on notebooks/
        source = out_dir / f".{name}.input.ipynb"
        source.write_text(asm.notebook_text(asm.assemble(name)), encoding="utf-8")
    params = {"output_dir": str(out_dir)}
    params.update(parameters or {})
    os.environ.setdefault("FIFTYONE_DO_NOT_TRACK", "true")
    pm.execute_notebook(
        str(source),
        str(out_dir / f"{name}.ipynb"),
        parameters=params,
        kernel_name=ensure_kernel(),
        execution_timeout=timeout,
        cwd=str(asm.ROOT),
        progress_bar=False,
        log_output=log_output,
        shutdown_kernel="immediate",
    )
    return out_dir


def _summarise(value, indent: int = 2, depth: int = 0, max_depth: int = 2) -> list:
    pad = " " * (indent * (depth + 1))
    lines = []
    if isinstance(value, dict):
        for key, item in value.items():
            if isinstance(item, dict) and depth < max_depth:
                lines.append(f"{pad}{key}:")
                lines.extend(_summarise(item, indent, depth + 1, max_depth))
            else:
                lines.append(f"{pad}{key}: {_short(item)}")
    return lines


def _short(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    text = json.dumps(value, default=str)
    return text if len(text) <= 100 else text[:97] + "..."


def cmd_list(args) -> int:
    from generator.recipes import NOTEBOOKS

    if args.modules:
        for name in asm.available_recipes():
            recipe = asm.parse_script(asm.RECIPES_DIR / f"{name}.py", name)
            modules = asm.resolve_modules(recipe)
            print(f"{name} ({len(modules)} modules, generator/recipes/{name}.py)")
            for module in modules:
                lines = sum(len(c.source.splitlines()) for c in module.cells if c.kind == "code")
                print(f"    {asm.module_label(module):<44} {lines:>5} lines  {asm._first_line(module)}")
        return 0
    for name in asm.available_recipes():
        title = asm._first_line(asm.parse_script(asm.RECIPES_DIR / f"{name}.py", name))
        print(f"{name:<26} {title}  [extra: {NOTEBOOKS.get(name, '-')}]")
        for param, default, comment in asm.parameters_of(name):
            note = f"  # {comment}" if comment else ""
            print(f"    {param} = {default}{note}")
    return 0


def cmd_build(args) -> int:
    written = asm.build(args.names or None)
    for path in written:
        print(f"wrote {path.relative_to(asm.ROOT)}")
    if not written:
        print("notebooks are up to date")
    return 0


def cmd_check(args) -> int:
    problems = asm.check()
    for problem in problems:
        print(problem, file=sys.stderr)
    if problems:
        return 1
    print(f"{len(asm.available_recipes())} notebooks are up to date and self-contained")
    return 0


def cmd_run(args) -> int:
    import papermill as pm

    parameters = {key: parse_value(value) for key, value in (args.param or [])}
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    out_dir = Path(args.out) if args.out else asm.ROOT / "runs" / args.name / stamp
    try:
        out_dir = execute_notebook(args.name, parameters, out_dir, timeout=args.timeout, log_output=args.verbose)
    except pm.PapermillExecutionError as error:
        import re

        print(
            f"\n{args.name} failed in cell {error.cell_index} (execution count {error.exec_count}) with "
            f"{error.ename}: {error.evalue}",
            file=sys.stderr,
        )
        print("Failing cell:\n" + "\n".join("    " + line for line in error.source.splitlines()[:40]), file=sys.stderr)
        traceback = re.sub(r"\x1b\[[0-9;]*m", "", "\n".join(error.traceback[-6:]))
        print("Traceback (last lines):\n" + traceback, file=sys.stderr)
        print(f"The partly executed notebook is in {out_dir}.", file=sys.stderr)
        return 1
    except asm.AssemblyError as error:
        print(f"cannot build {args.name}: {error}", file=sys.stderr)
        return 2
    print(f"\n{args.name} finished: {out_dir}")
    results_path = out_dir / "results.json"
    if results_path.exists():
        results = json.loads(results_path.read_text())
        print("results.json:")
        print("\n".join(_summarise(results)))
    else:
        print("warning: the notebook wrote no results.json", file=sys.stderr)
    return 0


def available_benchmarks() -> list:
    """Benchmarks are ``scripts/bench_<name>.py`` modules with a ``main(argv) -> int``."""
    return sorted(p.stem[len("bench_") :] for p in (asm.ROOT / "scripts").glob("bench_*.py"))


def cmd_bench(args, extra) -> int:
    import importlib

    names = available_benchmarks()
    if args.name not in names:
        print(f"audiolens bench: no benchmark {args.name!r}; available: {', '.join(names) or 'none'}", file=sys.stderr)
        return 2
    module = importlib.import_module(f"scripts.bench_{args.name}")
    return int(module.main(extra) or 0)


def cmd_prefetch(args, extra) -> int:
    import importlib

    module = importlib.import_module("scripts.prefetch")
    return int(module.main(extra) or 0)


def cmd_kernel(args) -> int:
    ensure_kernel(quiet=args.quiet)
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="audiolens", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p_list = sub.add_parser("list", help="the notebooks and their parameters")
    p_list.add_argument("--modules", action="store_true", help="which lib modules each notebook includes")
    p_list.set_defaults(func=cmd_list)
    p_build = sub.add_parser("build", help="regenerate notebooks from lib/ and generator/recipes/")
    p_build.add_argument("names", nargs="*")
    p_build.set_defaults(func=cmd_build)
    sub.add_parser("check", help="fail if a notebook is stale or imports lib/generator").set_defaults(func=cmd_check)
    p_run = sub.add_parser("run", help="build and execute a notebook with papermill")
    p_run.add_argument("name")
    p_run.add_argument(
        "-p",
        "--param",
        nargs=2,
        action="append",
        metavar=("KEY", "VALUE"),
        help="set a parameter (value parsed as a Python literal, else a string)",
    )
    p_run.add_argument("--out", help="output folder (default runs/<name>/<timestamp>/)")
    p_run.add_argument("--timeout", type=int, default=DEFAULT_TIMEOUT, help="seconds per cell (default 3600)")
    p_run.add_argument("-v", "--verbose", action="store_true", help="stream the notebook's output")
    p_run.set_defaults(func=cmd_run)
    p_bench = sub.add_parser(
        "bench",
        help="run a benchmark (scripts/bench_NAME.py): prints a stage table, writes "
        "DIR/bench.json; 'audiolens bench NAME --help' for its options",
    )
    p_bench.add_argument("name", help="benchmark name: " + ", ".join(available_benchmarks()))
    p_bench.set_defaults(func=cmd_bench)
    p_prefetch = sub.add_parser(
        "prefetch",
        help="download the models and data sets the notebooks use (--dry-run, --skip-whisper, --skip-codecs, "
        "--only NAME); 'audiolens prefetch --help' for its options",
        add_help=False,
    )
    p_prefetch.set_defaults(func=cmd_prefetch)
    p_kernel = sub.add_parser("kernel", help="register the audiolens Jupyter kernel for this Python")
    p_kernel.add_argument("--quiet", action="store_true")
    p_kernel.set_defaults(func=cmd_kernel)
    args, extra = parser.parse_known_args(argv)
    if args.command not in ("bench", "prefetch") and extra:
        parser.error("unrecognized arguments: " + " ".join(extra))
    try:
        if args.command in ("bench", "prefetch"):
            return args.func(args, extra)
        return args.func(args)
    except asm.AssemblyError as error:
        print(f"audiolens: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
