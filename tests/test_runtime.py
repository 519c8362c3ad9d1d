"""lib.core.runtime: seeds and CPU thread caps."""

from __future__ import annotations

import types

import numpy as np
import pytest
import torch
from threadpoolctl import threadpool_info, threadpool_limits

from lib.core.runtime import limit_cpu_threads, seed_everything


def test_seed_everything_makes_numpy_and_torch_repeatable():
    seed_everything(3)
    first = (np.random.rand(4), torch.rand(4))
    seed_everything(3)
    second = (np.random.rand(4), torch.rand(4))
    np.testing.assert_array_equal(first[0], second[0])
    assert torch.equal(first[1], second[1])


def test_limit_cpu_threads_caps_torch_and_blas():
    import scipy.linalg  # noqa: F401 - load the BLAS libraries before capping them

    before = torch.get_num_threads()
    try:
        with threadpool_limits(2):  # the test session runs with 1 thread: raise it first
            torch.set_num_threads(2)
            assert limit_cpu_threads(None) is None
            assert torch.get_num_threads() == 2
            assert any(pool["num_threads"] == 2 for pool in threadpool_info())
            assert limit_cpu_threads(1) == 1
            assert torch.get_num_threads() == 1
            assert all(pool["num_threads"] == 1 for pool in threadpool_info())
    finally:
        torch.set_num_threads(before)


@pytest.fixture
def no_hub_settings(monkeypatch):
    """No HF_HUB_OFFLINE, proxy or endpoint setting, and no remembered answer."""
    import lib.core.runtime as runtime

    for name in ("HF_HUB_OFFLINE", "HF_ENDPOINT", "HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(runtime, "_HUB_ANSWERS", {})
    return runtime


def _connections(monkeypatch, answer):
    import socket

    calls = []

    def connect(address, timeout=None):
        calls.append((address, timeout))
        if isinstance(answer, Exception):
            raise answer
        return answer

    monkeypatch.setattr(socket, "create_connection", connect)
    return calls


def test_hub_reachable_asks_once_and_obeys_offline_and_proxy_settings(monkeypatch, no_hub_settings, capsys):
    runtime = no_hub_settings
    calls = _connections(monkeypatch, OSError("[Errno -2] Name or service not known"))
    assert runtime.hub_reachable() is False
    assert runtime.hub_reachable() is False
    assert calls == [(("huggingface.co", 443), 3.0)]  # asked once per process
    assert "not reachable: models load from the local cache only" in capsys.readouterr().out

    monkeypatch.setattr(runtime, "_HUB_ANSWERS", {})
    monkeypatch.setenv("HF_ENDPOINT", "http://mirror.example:8080")
    calls = _connections(monkeypatch, types.SimpleNamespace(close=lambda: None))
    assert runtime.hub_reachable() is True
    assert calls[0][0] == ("mirror.example", 8080)

    monkeypatch.setenv("HTTPS_PROXY", "http://proxy:3128")  # the proxy decides: no direct connection tried
    monkeypatch.setattr(runtime, "_HUB_ANSWERS", {})
    calls = _connections(monkeypatch, OSError("refused"))
    assert runtime.hub_reachable() is True and calls == []
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert runtime.hub_reachable() is False and calls == []


def test_an_unreachable_hub_sends_model_loads_to_the_cache_at_once(monkeypatch, no_hub_settings):
    import transformers

    from lib.core.speech_models import ModelLoadError, load_speech_model
    from lib.digits.wav2vec2_finetune import Wav2Vec2Unavailable, load_wav2vec2_classifier

    _connections(monkeypatch, OSError("no route to host"))
    asked = []
    for cls in (transformers.AutoConfig, transformers.AutoFeatureExtractor):
        real = cls.from_pretrained

        def spy(name, *args, _real=real, **kwargs):
            asked.append(kwargs.get("local_files_only"))
            return _real(name, *args, **kwargs)

        monkeypatch.setattr(cls, "from_pretrained", spy)
    with pytest.raises(ModelLoadError, match="not in the local Hugging Face cache and the hub cannot be reached"):
        load_speech_model("audiolens-test/never-cached")
    with pytest.raises(Wav2Vec2Unavailable, match="not in the local Hugging Face cache and the hub cannot be reached"):
        load_wav2vec2_classifier("audiolens-test/never-cached")
    assert asked == [True, True]  # each loader asked the cache only, never the hub
