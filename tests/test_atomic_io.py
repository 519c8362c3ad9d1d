"""lib.core.atomic_io: a failed write keeps the previous file and leaves no temporary behind."""

from __future__ import annotations

import numpy as np
import pytest

from lib.core.atomic_io import atomic_output, atomic_save_npy, atomic_write_json, atomic_write_text


def test_atomic_output_renames_on_success_and_keeps_the_suffix(tmp_path):
    target = tmp_path / "sub" / "table.csv"
    with atomic_output(target) as tmp:
        assert tmp.parent == target.parent and tmp.suffix == ".csv" and tmp != target
        tmp.write_text("a,b\n1,2\n")
        assert not target.exists()  # nothing visible until the block succeeds
    assert target.read_text() == "a,b\n1,2\n"
    assert [p.name for p in target.parent.iterdir()] == ["table.csv"]


def test_a_failed_write_keeps_the_old_file(tmp_path):
    target = tmp_path / "results.json"
    atomic_write_json(target, {"version": 1})
    with pytest.raises(RuntimeError, match="disk full"):
        with atomic_output(target) as tmp:
            tmp.write_text('{"version": 2, "trunc')
            raise RuntimeError("disk full")
    assert target.read_text().strip() == '{\n  "version": 1\n}'
    assert [p.name for p in tmp_path.iterdir()] == ["results.json"]


def test_npy_and_text_round_trip(tmp_path):
    array = np.arange(12, dtype=np.float32).reshape(3, 4)
    np.testing.assert_array_equal(np.load(atomic_save_npy(tmp_path / "x.npy", array)), array)
    assert atomic_write_text(tmp_path / "t.txt", "héllo").read_text(encoding="utf-8") == "héllo"
