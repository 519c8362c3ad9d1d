"""audiolens prefetch: dry run, selection, resumable downloads and clear offline errors (never the network)."""

from __future__ import annotations

import hashlib
import io
import urllib.error

import pytest

from generator.cli import main as cli_main
from scripts import prefetch


@pytest.fixture
def no_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise urllib.error.URLError("network is unreachable (test)")

    monkeypatch.setattr("urllib.request.urlopen", refuse)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def test_dry_run_lists_sizes_and_fetches_nothing(no_network, capsys, tmp_path, monkeypatch):
    monkeypatch.setattr(prefetch, "_fetch_model", lambda item: pytest.fail("dry run fetched a model"))
    assert cli_main(["prefetch", "--dry-run", "--data-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    for name in ("wavlm-base-plus", "faster-whisper-tiny.en", "mimi", "fsdd", "esc50"):
        assert name in out
    assert " MB" in out and "GB in all" in out and "speech_commands" not in out
    assert cli_main(["prefetch", "--dry-run", "--skip-codecs", "--skip-whisper", "--data-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "mimi" not in out and "whisper" not in out.split("in all")[0].lower() and "wavlm-base-plus" in out
    assert cli_main(["prefetch", "--dry-run", "--all"]) == 0 and "speech_commands" in capsys.readouterr().out


def test_selection_rejects_unknown_names():
    assert [i.name for i in prefetch.select_items(["fsdd", "mimi"])] == ["mimi", "fsdd"]
    with pytest.raises(SystemExit, match="unknown item"):
        prefetch.select_items(["wavlm-large"])


def test_offline_errors_name_each_item(no_network, capsys, tmp_path, monkeypatch):
    monkeypatch.delenv("AUDIOLENS_DATA", raising=False)  # no local copy anywhere: the data set must be fetched
    monkeypatch.chdir(tmp_path)
    assert cli_main(["prefetch", "--only", "whisper-tiny", "--only", "fsdd", "--data-dir", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "whisper-tiny (openai/whisper-tiny)" in err and "HF_HUB_OFFLINE" in err
    assert "cannot download https://github.com" in err and "Offline?" in err and "2 of 2" in err
    assert not (tmp_path / "fsdd").exists()


class FakeResponse(io.BytesIO):
    def __init__(self, data, status, length):
        super().__init__(data)
        self.status, self.headers = status, {"Content-Length": str(length)}

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def test_download_resumes_from_the_partial_file(monkeypatch, tmp_path):
    payload = bytes(range(256)) * 40
    target = tmp_path / "archive.tar.gz"
    target.with_name(target.name + ".part").write_bytes(payload[:1000])
    seen = {}

    def fake_urlopen(request, timeout=0):
        seen["range"] = request.headers.get("Range")
        return FakeResponse(payload[1000:], 206, len(payload) - 1000)

    monkeypatch.setattr("urllib.request.urlopen", fake_urlopen)
    digest = "sha256:" + hashlib.sha256(payload).hexdigest()
    prefetch.download_resumable("https://example.invalid/a.tar.gz", target, digest)
    assert seen["range"] == "bytes=1000-" and target.read_bytes() == payload
    target.unlink()
    target.with_name(target.name + ".part").write_bytes(b"junk")
    monkeypatch.setattr("urllib.request.urlopen", lambda r, timeout=0: FakeResponse(payload[4:], 206, len(payload) - 4))
    with pytest.raises(prefetch.PrefetchError, match="checksum mismatch"):
        prefetch.download_resumable("https://example.invalid/a.tar.gz", target, digest)
    assert not target.exists() and not target.with_name(target.name + ".part").exists()
