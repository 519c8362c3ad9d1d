"""The explorer's AudioMAE/RF variant: checkpoints of audiomae_training, external encoders, IQ recordings."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lib.explorer.audio_embedders import (
    ExplorerEncoderError,
    embed_audio_files_cached,
    embed_signal_files,
    make_audio_embedder,
)
from lib.explorer.embedding_quality import knn_accuracy_cv
from lib.explorer.explorer_data import load_explorer_dataset
from lib.explorer.explorer_rf import ExplorerIqReader, IqPreviewRenderer, rf_demo_recordings
from lib.explorer.mae_embedders import (
    AudioMaeCheckpointEmbedder,
    ExternalCheckpointEmbedder,
    ExternalCheckpointError,
    mae_external_state_dict,
)
from lib.explorer.spectrogram_media import make_explorer_transform
from lib.mae.audiomae import build_audiomae_model
from lib.mae.mae_checkpoints import MaeCheckpointError, save_mae_checkpoint
from lib.mae.mae_transforms import build_mae_transform
from tests.test_audiomae_checkpoints import TINY  # the same tiny AudioMAE++ as the checkpoint tests


@pytest.fixture(scope="module")
def clips(fsdd_manifest):
    return list(fsdd_manifest.groupby("label").head(1).path[:6])


@pytest.fixture(scope="module")
def tiny_mae():
    torch.manual_seed(0)
    return build_audiomae_model("audiomae++", "tiny", input_size=(80, 48), **TINY)


def test_audiomae_checkpoint_embedder(tmp_path, clips, tiny_mae):
    with pytest.raises(ExplorerEncoderError, match="needs audiomae_checkpoint"):
        make_audio_embedder("audiomae")
    with pytest.raises(FileNotFoundError, match="not found"):
        make_audio_embedder("audiomae", checkpoint=tmp_path / "nope.pt").load()
    path = tmp_path / "mae.pt"
    save_mae_checkpoint(path, tiny_mae, transform_config=build_mae_transform("log_mel", frames=48).config)
    embedder = make_audio_embedder("audiomae", checkpoint=path, batch_size=4).load()
    assert isinstance(embedder, AudioMaeCheckpointEmbedder) and len(embedder.checkpoint_hash) == 64
    embeddings, files, meta = embed_audio_files_cached(clips, embedder, tmp_path / "c", "fsdd", progress=False)
    assert embeddings.shape == (6, 64) and np.isfinite(embeddings).all()
    assert meta["model"]["checkpoint_hash"] == embedder.checkpoint_hash
    with torch.no_grad():  # the same numbers as the model on the transform's output
        image = torch.from_numpy(np.stack([embedder.prepare(*embedder.reader()(c)) for c in clips[:2]]))
        np.testing.assert_allclose(embeddings[:2], tiny_mae.eval().encode(image).numpy(), rtol=1e-4, atol=1e-5)
    assert "log_mel" in embedder.describe() and "frames 48" in embedder.describe()
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(path.read_bytes()[:5000])
    with pytest.raises(MaeCheckpointError, match="not a readable checkpoint"):
        make_audio_embedder("audiomae", checkpoint=corrupt).load()


def _encoder_only(model) -> dict:
    return {k: v.clone() for k, v in model.state_dict().items() if not k.startswith(("decoder", "mask_token"))}


def test_external_plain_encoder_state_dict_loads_fully(tmp_path, clips, tiny_mae, capsys):
    path = tmp_path / "encoder_only_fixed.pt"
    torch.save(_encoder_only(tiny_mae), path)
    embedder = make_audio_embedder(
        "external", checkpoint=path, external_config={"num_heads": 2, "input_size": [80, 48]}
    ).load()
    assert isinstance(embedder, ExternalCheckpointEmbedder)
    report = embedder.report
    assert report["matched"] == report["encoder_tensors"] and report["fraction_loaded"] == 1.0
    assert report["missing"] == [] and report["unexpected"] == [] and report["mismatched"] == []
    config = report["config"]
    assert (config["embed_dim"], config["depth"], config["block"], config["patch_size"]) == (64, 2, "macaron", (16, 4))
    assert "matched" in capsys.readouterr().out
    ours, _, _, _ = embed_signal_files(clips[:3], embedder, progress=False)
    reference = make_audio_embedder("audiomae", checkpoint=_saved(tmp_path, tiny_mae)).load()
    theirs, _, _, _ = embed_signal_files(clips[:3], reference, progress=False)
    np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-5)


def _saved(tmp_path, model):
    path = tmp_path / "ours.pt"
    save_mae_checkpoint(path, model, transform_config=build_mae_transform("log_mel", frames=48).config)
    return path


def test_external_wrapped_prefixed_and_timm_named_keys_are_mapped(tmp_path):
    torch.manual_seed(1)
    vit = build_audiomae_model("vit_mae", "tiny", input_size=(80, 48), **TINY)
    timm_names = {}
    for key, value in _encoder_only(vit).items():
        key = key.replace("patch_embed.", "patch_embed.proj.").replace(".norm_attn.", ".norm1.")
        key = key.replace(".norm_ff2.", ".norm2.").replace(".ff2.fc1.", ".mlp.fc1.").replace(".ff2.fc2.", ".mlp.fc2.")
        timm_names[f"module.encoder.{key}"] = value
    timm_names["module.encoder.pos_embed"] = torch.zeros(1, 61, 64)
    timm_names["module.encoder.head.weight"] = torch.zeros(10, 64)
    path = tmp_path / "full.pt"
    torch.save({"epoch": 3, "model": timm_names, "optimizer": {"lr": 0.1}}, path)
    embedder = ExternalCheckpointEmbedder(path, external_config={"num_heads": 2}).load()
    report = embedder.report
    assert report["fraction_loaded"] == 1.0 and report["config"]["block"] == "vit"
    assert not report["config"]["use_rope"] and "unwrapped 'model'" in report["notes"]
    assert any("module." in n for n in report["notes"]) and any("renamed" in n for n in report["notes"])
    assert set(report["ignored"]) == {"pos_embed", "head.weight"}
    state, notes = mae_external_state_dict(torch.load(path, weights_only=True))
    assert "blocks.0.norm_attn.weight" in state and "blocks.0.ff2.fc1.weight" in state


def test_external_checkpoint_below_the_threshold_is_refused(tmp_path, tiny_mae):
    partial = _encoder_only(tiny_mae)
    for key in [k for k in partial if k.startswith("blocks.1.")]:
        del partial[key]
    partial["blocks.0.attn.qkv.weight"] = torch.zeros(10, 10)
    partial["some_other_net.weight"] = torch.zeros(3)
    path = tmp_path / "partial.pt"
    torch.save(partial, path)
    with pytest.raises(ExternalCheckpointError, match=r"refused: only [0-9.]+% .*missing: blocks\.0\.attn") as caught:
        ExternalCheckpointEmbedder(path, external_config={"num_heads": 2}).load()
    message = str(caught.value)
    assert "unexpected: some_other_net.weight" in message and "wrong shape: blocks.0.attn.qkv.weight" in message
    lenient = ExternalCheckpointEmbedder(path, external_config={"num_heads": 2}, min_loaded=0.2).load()
    assert 0.2 < lenient.report["fraction_loaded"] < 0.9
    torch.save({"conv.weight": torch.zeros(4, 4)}, tmp_path / "other.pt")
    with pytest.raises(ExternalCheckpointError, match="no patch embedding"):
        ExternalCheckpointEmbedder(tmp_path / "other.pt").load()
    (tmp_path / "text.pt").write_text("not a checkpoint")
    with pytest.raises(ExternalCheckpointError, match="not a readable torch checkpoint"):
        ExternalCheckpointEmbedder(tmp_path / "text.pt").load()
    save_mae_checkpoint(tmp_path / "ours.pt", tiny_mae)
    with pytest.raises(ExternalCheckpointError, match="encoder='audiomae'"):
        ExternalCheckpointEmbedder(tmp_path / "ours.pt").load()
    with pytest.raises(ExplorerEncoderError, match="unknown key"):
        ExternalCheckpointEmbedder(path, external_config={"heads": 2})


# ----------------------------------------------------------------------------------------- RF
@pytest.fixture(scope="module")
def rf_folder(tmp_path_factory):
    return rf_demo_recordings(tmp_path_factory.mktemp("rf") / "demo", per_class=24, n_samples=2048)


def test_rf_demo_loads_through_the_registry(rf_folder, tmp_path):
    data = load_explorer_dataset("rf", rf_folder)
    assert data.signal == "iq" and len(data.manifest) == 96 and data.manifest.label.nunique() == 4
    assert set(data.manifest.format) == {"sigmf-data"} and (data.manifest.sample_rate == 1e6).all()
    demo = load_explorer_dataset("iq", cache_dir=tmp_path / "cache")  # no data_path: the demo set, written once
    assert len(demo.manifest) == 400 and "snr_db" in demo.manifest and (tmp_path / "rf-demo" / "demo.json").exists()


def test_iq_transforms_draw_and_their_statistics_separate_modulations(rf_folder, tmp_path):
    data = load_explorer_dataset("rf", rf_folder)
    paths, labels = list(data.manifest.path), data.manifest.label.to_numpy()
    renderer = make_explorer_transform("iq_constellation", tmp_path / "png", paths)
    assert isinstance(renderer, IqPreviewRenderer) and "constellation" in renderer.describe()
    png = renderer.render(paths[0], *ExplorerIqReader()(paths[0]))
    from PIL import Image

    assert Image.open(png).size == (256, 256)
    spectrogram = make_explorer_transform("iq_spectrogram", tmp_path / "png", paths)
    assert Image.open(spectrogram.render(paths[0])).size == (256, 128) and "FFT" in spectrogram.describe()
    scores = {}
    for transform in ("iq_constellation", "iq_spectrogram"):
        embedder = make_audio_embedder("transform_stats", transform=transform).load()
        x, ok, failed, rejected = embed_signal_files(paths, embedder, 16, False, workers=2, reader=embedder.reader())
        assert ok == paths and not failed and not rejected
        scores[transform] = knn_accuracy_cv(x, labels, None, None, k=5)["accuracy"]
    # 4 modulations (chance 0.25), SNR 0-20 dB and a drifting carrier that smears the constellation
    assert min(scores.values()) > 0.35, scores
