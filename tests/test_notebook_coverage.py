"""scripts/notebook_coverage.py: lines run in the kernel, in threads and in forked workers all count."""

from __future__ import annotations

import multiprocessing
import os

import nbformat
import pytest

from scripts import notebook_coverage

LIB_CELL = """# @title lib/fam/work.py: in_thread, in_worker, never
def in_thread(x):
    y = x + 1
    return y


def in_worker(x):
    y = x * 2
    return y


def never(x):
    y = x - 1
    return y
"""

RECIPE_CELL = """from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
import multiprocessing

with ThreadPoolExecutor(max_workers=2) as pool:
    threaded = list(pool.map(in_thread, range(4)))
with ProcessPoolExecutor(max_workers=2, mp_context=multiprocessing.get_context("fork")) as pool:
    forked = list(pool.map(in_worker, range(4)))
"""


@pytest.mark.skipif(os.name != "posix" or "fork" not in multiprocessing.get_all_start_methods(), reason="fork")
def test_lines_run_in_threads_and_forked_workers_count(tmp_path, monkeypatch):
    (tmp_path / "notebooks").mkdir()
    notebook = nbformat.v4.new_notebook(
        cells=[
            nbformat.v4.new_code_cell('output_dir = "out"', metadata={"tags": ["parameters"]}),
            nbformat.v4.new_code_cell(LIB_CELL, metadata={"tags": ["lib"]}),
            nbformat.v4.new_code_cell(RECIPE_CELL),
        ]
    )
    nbformat.write(notebook, tmp_path / "notebooks" / "toy.ipynb")
    monkeypatch.setattr(notebook_coverage, "ROOT", tmp_path)
    report = notebook_coverage.measure("toy", {"output_dir": str(tmp_path / "out")})
    lib = report["modules"]["lib/fam/work.py"]
    # the three def lines ran; so did the bodies of in_thread (a thread) and in_worker (a forked process), 2 lines
    # each; never's body did not. Line 0 (CPython's RESUME) is not counted.
    assert lib == {"lines": 9, "run": 7}
    missed = [item for item in report["missed"].values() if item["owner"] == "lib/fam/work.py"]
    assert [item["lines"] for item in missed] == [[13, 14]]  # line 1 is the cell's title
    assert "y = x - 1" in notebook_coverage.missed_text(report)


CHECKED_CELL = """# @title lib/fam/checks.py: parse
def parse(text):
    try:
        value = int(text)
    except ValueError:
        raise ValueError(
            f"{text!r} is not a number"
        ) from None
    if value < 0:
        message = "negative"
        raise ValueError(message)
    if value > 100:
        value = 100
    return value


class Unused:
    def method(self):
        return 1
"""


def test_lines_not_run_are_listed_per_function_with_their_error_handling(tmp_path, monkeypatch, capsys):
    (tmp_path / "notebooks").mkdir()
    notebook = nbformat.v4.new_notebook(
        cells=[
            nbformat.v4.new_code_cell('output_dir = "out"', metadata={"tags": ["parameters"]}),
            nbformat.v4.new_code_cell(CHECKED_CELL, metadata={"tags": ["lib"]}),
            nbformat.v4.new_code_cell("parsed = parse('7')"),
        ]
    )
    nbformat.write(notebook, tmp_path / "notebooks" / "toy.ipynb")
    monkeypatch.setattr(notebook_coverage, "ROOT", tmp_path)
    report = notebook_coverage.measure("toy", {"output_dir": str(tmp_path / "out")})
    rows = notebook_coverage.functions_not_run(report)
    # parse('7'): the except clause and its raise (over 3 lines), the `if value < 0` body (an assignment, then
    # its raise) and `value = 100` did not run; only the last is not error handling. Unused's method body did
    # not run either.
    assert rows == [
        {"owner": "lib/fam/checks.py", "name": "parse", "not_run": 7, "error_paths": 6},
        {"owner": "lib/fam/checks.py", "name": "Unused", "not_run": 1, "error_paths": 0},
    ]
    assert notebook_coverage.main(["toy", "--by-function", "5", "-p", "output_dir", str(tmp_path / "o2")]) == 0
    out = capsys.readouterr().out
    assert "of the 8 lines not run, 6 are error handling" in out
    assert "parse" in out and "Unused" in out
