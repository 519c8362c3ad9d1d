"""The ``audiolens`` command: list, build, check and run the notebooks."""

from __future__ import annotations

import argparse
import ast
import json
import os
import shutil
import sys
import time
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


class RunFolderError(RuntimeError):
    """``--out`` cannot be used as asked (not empty, not a run folder); the message says what to do."""


class NotebookRunFailed(RuntimeError):
    """The kernel died or a cell timed out; the message is one line naming the cell and the notebook."""


RUN_LOCK_NAME = ".audiolens-run.lock"


def _bad_list_value(text: str, value, entry: dict) -> bool:
    """True when ``text`` looks like a list/dict/tuple but did not parse (the shell ate its quotes)."""
    from generator.parameter_check import _param_spec_parts

    each, kind, _rule = _param_spec_parts(entry.get("spec", ""))
    kind = (
        "list" if each else kind or (type(entry.get("default")).__name__ if entry.get("default") is not None else None)
    )
    return isinstance(value, str) and text.strip()[:1] in "[{(" and "str" not in str(kind).split("|") and kind != "path"


def check_run_parameters(name: str, pairs) -> dict:
    """Parse and validate ``-p KEY VALUE`` pairs against notebook ``name``'s declared parameters.

    Unknown names (with the closest known one), list-looking values that do not parse, and
    values that break a parameter's type, range, choices or ``[path]`` rule raise
    ``ParameterError`` listing every problem. Old names are mapped to their new ones (with a
    deprecation message). ``[path]`` values are made absolute from the current folder (the
    kernel runs in the repository root). Returns ``{name: value}`` under the current names.
    """
    import difflib

    from generator.parameter_check import ParameterError, audiolens_check_parameters
    from generator.recipes import RENAMED_PARAMETERS

    schema = asm.parameter_schema(name)
    renamed = RENAMED_PARAMETERS.get(name, {})
    values, problems = {}, []
    for key, text in pairs:
        if key not in schema and key not in renamed:
            close = difflib.get_close_matches(key, list(schema) + list(renamed), n=1)
            hint = f"; did you mean {renamed.get(close[0], close[0])!r}?" if close else ""
            problems.append(f"{key}: not a parameter of {name}{hint} (audiolens list shows them)")
            continue
        entry = schema[renamed.get(key, key)]
        value = parse_value(text)
        if _bad_list_value(text, value, entry):
            problems.append(
                f"{key}: {text!r} looks like a list but does not parse as one (the shell may have stripped "
                f'its quotes); quote it whole and each item: -p {key} \'["a", "b"]\''
            )
            continue
        if "path" in entry.get("spec", "") and isinstance(value, str) and not os.path.isabs(os.path.expanduser(value)):
            value = str(Path(value).expanduser().resolve())
        values[key] = value
    try:
        audiolens_check_parameters(values, schema, renamed, name)
    except ParameterError as error:
        problems.extend(line.strip() for line in str(error).splitlines()[1:-1])
    if problems:
        raise ParameterError(
            f"invalid parameters for {name}:\n  " + "\n  ".join(problems) + "\nNothing was run; fix them and run again."
        )
    return values


def _is_run_folder(folder: Path) -> bool:
    """Does ``folder`` look like the output of an audiolens run (it has a results.json)?"""
    return (folder / "results.json").is_file()


def _previous_run(folder: Path) -> str:
    from generator.parameter_check import _audiolens_load_json

    run = (_audiolens_load_json(folder / "results.json") or {}).get("run") or {}
    if not run:
        return "results of an earlier run" if (folder / "results.json").exists() else "files"
    return f"run {run.get('id')} of {run.get('notebook', '?')}, status {run.get('status', '?')}"


def prepare_run_folder(folder: Path, resume: bool = False, overwrite: bool = False, dry_run: bool = False) -> str:
    """Check that ``folder`` may receive a run (call with its lock held); clear it for ``overwrite``.

    An empty or new folder is fine. A non-empty one needs ``resume`` (run again in it: its
    checkpoints and caches are reused, results.json starts afresh) or ``overwrite`` (its contents
    are deleted first, only when it is an audiolens run folder). Returns what was done, for the log.
    ``dry_run``: raise the same errors, change nothing.
    """
    entries = sorted(p for p in folder.iterdir() if p.name != RUN_LOCK_NAME) if folder.exists() else []
    if not entries:
        return ""
    if resume and overwrite:
        raise RunFolderError("--resume and --overwrite contradict each other; choose one")
    listing = ", ".join(p.name for p in entries[:5]) + (", ..." if len(entries) > 5 else "")
    if not resume and not overwrite:
        raise RunFolderError(
            f"--out {folder} is not empty ({_previous_run(folder)}: {listing}). Pass --resume to run again in it "
            "(its checkpoints and caches are reused; results.json starts afresh, the old one is kept as "
            "results.previous.json), --overwrite to delete its contents first, or choose another --out "
            "(without --out every run gets a new folder)."
        )
    if resume:
        return f"resuming in {folder} ({_previous_run(folder)})"
    if not _is_run_folder(folder):
        raise RunFolderError(
            f"--overwrite refused: {folder} holds files ({listing}) but no results.json, so it is not an audiolens "
            "run folder; nothing was deleted. Choose an empty or new --out."
        )
    previous = _previous_run(folder)
    if dry_run:
        return ""
    for entry in entries:
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()
    return f"--overwrite: deleted {len(entries)} entries of {folder} ({previous})"


def _running_cell(notebook_path: Path):
    """``(index, first source line)`` of the cell papermill marked running (or last started), or None."""
    try:
        cells = json.loads(notebook_path.read_text(encoding="utf-8"))["cells"]
    except (OSError, ValueError, KeyError):
        return None
    marks = [cell.get("metadata", {}).get("papermill", {}) for cell in cells]
    candidates = [i for i, mark in enumerate(marks) if mark.get("status") in ("running", "failed")]
    # a dead kernel's cell is closed as "completed": it is the last one that started
    candidates = candidates or [i for i, mark in enumerate(marks) if mark.get("start_time")][-1:]
    if not candidates:
        return None
    lines = [line.strip() for line in "".join(cells[candidates[0]].get("source", "")).splitlines()]
    code = [line for line in lines if line and not line.startswith("#")]
    return candidates[0], (code[0] if code else "")


def execute_notebook(
    name: str,
    parameters: dict | None = None,
    out_dir: Path | None = None,
    timeout: int = DEFAULT_TIMEOUT,
    build_first: bool = True,
    log_output: bool = False,
    run_id: str | None = None,
    lock: bool = True,
) -> Path:
    """Build (optionally) and execute notebook ``name`` with papermill into ``out_dir``.

    The recipe's ``output_dir`` parameter is set to ``out_dir`` so ``results.json`` and figures
    land beside the executed notebook. The folder is locked for the run (``lock``; a second run
    there fails with ``FileInUseError`` naming this one) and ``results.json`` starts with this
    run's record, whose status ends ``complete`` or ``failed at cell N: ...``. Returns
    ``out_dir``; raises papermill's ``PapermillExecutionError`` on a failing cell and
    ``NotebookRunFailed`` (one line: the cell, the partial notebook) when the kernel dies or a
    cell times out.
    """
    from generator.parameter_check import audiolens_finish_run, audiolens_new_run_id
    from lib.core.atomic_io import file_lock

    run_id = run_id or audiolens_new_run_id()
    if out_dir is None:
        out_dir = asm.ROOT / "runs" / name / run_id
    out_dir = Path(out_dir).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    if not lock:
        return _execute_locked(name, parameters, out_dir, timeout, build_first, log_output, run_id)
    with file_lock(
        out_dir / RUN_LOCK_NAME, timeout=0, what=f"output folder {out_dir}", info={"run_id": run_id, "notebook": name}
    ):
        try:
            return _execute_locked(name, parameters, out_dir, timeout, build_first, log_output, run_id)
        except KeyboardInterrupt:
            audiolens_finish_run(out_dir, run_id, "interrupted")
            raise


def _kernel_transport() -> tuple:
    """``(socket folder, papermill kwargs)``: on POSIX the kernel talks over Unix sockets in a
    private temporary folder (IPC transport), not unencrypted TCP on localhost, so no other
    local user can connect to it and ipykernel has no plain-text warning to print; elsewhere
    ``(None, {})``, papermill's TCP default."""
    if os.name != "posix":
        return None, {}
    import tempfile

    from traitlets.config import Config

    folder = tempfile.mkdtemp(prefix="audiolens-kernel-")  # mode 0700: this user's sockets only
    return folder, {"config": Config({"KernelManager": {"transport": "ipc", "ip": os.path.join(folder, "kernel")}})}


def _execute_locked(name, parameters, out_dir, timeout, build_first, log_output, run_id) -> Path:
    import papermill as pm
    from nbclient.exceptions import CellTimeoutError, DeadKernelError

    from generator.parameter_check import audiolens_finish_run, audiolens_start_run

    if build_first:
        asm.build([name])
        source = asm.NOTEBOOKS_DIR / f"{name}.ipynb"
    else:  # assemble in memory: parallel test runs never race on notebooks/
        source = out_dir / f".{name}.input.ipynb"
        source.write_text(asm.notebook_text(asm.assemble(name)), encoding="utf-8")
    params = {"output_dir": str(out_dir)}
    params.update(parameters or {})
    audiolens_start_run(out_dir, name, params, run_id, export=False)
    executed = out_dir / f"{name}.ipynb"
    saved_env = {
        key: os.environ.get(key)
        for key in (
            "AUDIOLENS_CLI_RUN_ID",
            "FIFTYONE_DO_NOT_TRACK",
            "AUDIOLENS_TEXT_PROGRESS",
            "TQDM_MININTERVAL",
            "HF_HUB_DISABLE_PROGRESS_BARS",
        )
    }
    os.environ["AUDIOLENS_CLI_RUN_ID"] = run_id  # the kernel's check cell keeps this run's record
    os.environ.setdefault("FIFTYONE_DO_NOT_TRACK", "true")
    # progress as text in the saved notebook (its setup cell swaps tqdm.auto's widget bar for the text one),
    # redrawn at most every 2 s so a long bar does not fill the notebook with updates
    os.environ.setdefault("AUDIOLENS_TEXT_PROGRESS", "1")
    os.environ.setdefault("TQDM_MININTERVAL", "2")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # no "Loading weights" bars from transformers
    started = time.perf_counter()
    socket_dir, transport = _kernel_transport()
    try:
        pm.execute_notebook(
            str(source),
            str(executed),
            parameters=params,
            kernel_name=ensure_kernel(),
            execution_timeout=timeout,
            cwd=str(asm.ROOT),
            progress_bar=False,
            log_output=log_output,
            shutdown_kernel="immediate",
            **transport,
        )
    except pm.PapermillExecutionError as error:
        # the index in the saved notebook: papermill inserts its error banner cells above the failing cell
        cell = _running_cell(executed)
        error.saved_cell_index = cell[0] if cell else error.cell_index
        status = f"failed at cell {error.saved_cell_index}: {error.ename}: {str(error.evalue)[:300]}"
        audiolens_finish_run(out_dir, run_id, status, executed_notebook=str(executed))
        raise
    except (DeadKernelError, CellTimeoutError) as error:
        cell = _running_cell(executed)
        what = (
            "the kernel died (killed, out of memory, or a native crash; if it dies at this cell again, `python -m "
            "scripts.warm_numba --fresh` rebuilds librosa's numba cache, which parallel first runs can corrupt)"
            if isinstance(error, DeadKernelError)
            else f"it ran longer than the {timeout} s cell timeout (--timeout)"
        )
        where = f"cell {cell[0]}" if cell else "cell ?"
        audiolens_finish_run(out_dir, run_id, f"failed at {where}: {what}", executed_notebook=str(executed))
        code = f" ({cell[1][:60]})" if cell and cell[1] else ""
        raise NotebookRunFailed(
            f"{name} failed at {where}{code}: {what}; the partly executed notebook is {executed}"
        ) from None
    finally:
        if socket_dir:
            shutil.rmtree(socket_dir, ignore_errors=True)
        for key, value in saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    audiolens_finish_run(
        out_dir, run_id, "complete", seconds=round(time.perf_counter() - started, 1), executed_notebook=str(executed)
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

    if args.modules:  # what each committed notebook carries (`audiolens check` keeps them in sync)
        import nbformat

        titles = {}
        for name in asm.available_recipes():
            notebook = nbformat.read(asm.NOTEBOOKS_DIR / f"{name}.ipynb", as_version=4)
            made = notebook.metadata["audiolens"]
            print(f"{name} ({len(made['lib_modules'])} modules, {made['recipe']})")
            for label in made["lib_modules"]:
                title_line = f"# @title {label}:"
                lines = sum(len(c.source.splitlines()) - 1 for c in notebook.cells if c.source.startswith(title_line))
                if label not in titles:
                    titles[label] = asm._first_line(asm.parse_script(asm.ROOT / label, label[4:-3].replace("/", ".")))
                print(f"    {label:<44} {lines:>5} lines  {titles[label]}")
            if made.get("lib_modules_not_carried"):
                print(f"    (not carried: nothing in it is used here) {', '.join(made['lib_modules_not_carried'])}")
        return 0
    for name in asm.available_recipes():
        title = asm._first_line(asm.recipe_script(name))
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

    from generator.parameter_check import ParameterError, audiolens_new_run_id
    from lib.core.atomic_io import FileInUseError, file_lock

    if args.name not in asm.available_recipes():
        print(
            f"audiolens run: unknown notebook {args.name!r}; notebooks: {', '.join(asm.available_recipes())}",
            file=sys.stderr,
        )
        return 2
    if not args.verbose:  # failures are summarised below; papermill's own log lines would repeat them
        import logging

        logging.getLogger("papermill").setLevel(logging.CRITICAL)
    try:
        parameters = check_run_parameters(args.name, args.param or [])
    except ParameterError as error:
        print(f"audiolens run: {error}", file=sys.stderr)
        return 2
    args.name, parameters, note = asm.variant_for(args.name, parameters)  # a variant carries the code asked for
    if note:
        print(note)
    run_id = audiolens_new_run_id()
    if args.out:
        out_dir = Path(args.out).expanduser().resolve()
        if out_dir.exists() and not out_dir.is_dir():
            print(f"audiolens run: --out {out_dir} is a file, not a folder", file=sys.stderr)
            return 2
    else:
        out_dir = asm.ROOT / "runs" / args.name / run_id
    try:
        if not (out_dir / RUN_LOCK_NAME).exists():  # refuse a user's folder before writing anything into it
            prepare_run_folder(out_dir, resume=args.resume, overwrite=args.overwrite, dry_run=True)
        out_dir.mkdir(parents=True, exist_ok=True)
        with file_lock(
            out_dir / RUN_LOCK_NAME,
            timeout=0,
            what=f"output folder {out_dir}",
            info={"run_id": run_id, "notebook": args.name},
        ):
            done = prepare_run_folder(out_dir, resume=args.resume, overwrite=args.overwrite)
            if done:
                print(done)
            print(f"{args.name}: run {run_id} in {out_dir}")
            try:
                execute_notebook(
                    args.name,
                    parameters,
                    out_dir,
                    timeout=args.timeout,
                    log_output=args.verbose,
                    run_id=run_id,
                    lock=False,
                )
            except KeyboardInterrupt:
                from generator.parameter_check import audiolens_finish_run

                audiolens_finish_run(out_dir, run_id, "interrupted")
                print(f"\n{args.name}: interrupted; the partly executed notebook is in {out_dir}", file=sys.stderr)
                return 130
    except (FileInUseError, RunFolderError) as error:
        print(f"audiolens run: {error}", file=sys.stderr)
        return 2
    except NotebookRunFailed as error:
        print(f"audiolens run: {error}", file=sys.stderr)
        return 1
    except pm.PapermillExecutionError as error:
        import re

        index = getattr(error, "saved_cell_index", error.cell_index)
        print(
            f"\n{args.name} failed in cell {index} of the saved notebook (execution count {error.exec_count}) with "
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
    if args.name is None:  # `audiolens bench` or `audiolens bench --help`: what there is
        print("usage: audiolens bench NAME [options]; 'audiolens bench NAME --help' lists NAME's options")
        print("benchmarks: " + ", ".join(names))
        return 0 if {"-h", "--help"} & set(extra) else 2
    if args.name not in names:
        print(f"audiolens bench: no benchmark {args.name!r}; available: {', '.join(names) or 'none'}", file=sys.stderr)
        return 2
    from lib.core.datasets import DatasetNotFoundError
    from lib.core.speech_models import ModelLoadError

    module = importlib.import_module(f"scripts.bench_{args.name}")
    try:
        return int(module.main(extra) or 0)
    except (ModelLoadError, DatasetNotFoundError, FileNotFoundError) as error:  # the message says what to do
        print(f"audiolens bench {args.name}: {error}", file=sys.stderr)
        return 2


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
    p_run.add_argument("--out", help="output folder (default: a new runs/<name>/<run id>/)")
    p_run.add_argument(
        "--resume",
        action="store_true",
        help="run again in a non-empty --out, reusing its checkpoints and caches (results.json starts afresh)",
    )
    p_run.add_argument(
        "--overwrite", action="store_true", help="delete the contents of a non-empty --out (an earlier run) first"
    )
    p_run.add_argument("--timeout", type=int, default=DEFAULT_TIMEOUT, help="seconds per cell (default 3600)")
    p_run.add_argument("-v", "--verbose", action="store_true", help="stream the notebook's output")
    p_run.set_defaults(func=cmd_run)
    p_bench = sub.add_parser(
        "bench",
        help="run a benchmark (scripts/bench_NAME.py): prints a stage table, writes "
        "DIR/bench.json; 'audiolens bench NAME --help' for its options",
        add_help=False,  # --help reaches the benchmark's own parser
    )
    p_bench.add_argument("name", nargs="?", help="benchmark name: " + ", ".join(available_benchmarks()))
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
