"""Every registered MAE model, data source and transform: interface, forward passes, lookup by name."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from lib.mae.audiomae import AUDIOMAE_SIZES, AudioMaeClassifier, audiomae_config, build_audiomae_model
from lib.mae.mae_data import build_mae_data_source, mae_load_split, mae_stratified_split, mae_subsample
from lib.mae.mae_registry import (
    MAE_DATA_SOURCES,
    MAE_MODELS,
    MAE_TRANSFORMS,
    MaeDataSourceBase,
    MaeModelBase,
    MaeRegistry,
    MaeTransformBase,
    register_mae_transform,
)
from lib.mae.mae_training import mae_constant_patch_share
from lib.mae.mae_transforms import MAE_IQ_MODULATIONS, build_mae_transform, mae_synthetic_iq

SMALL = dict(depth=2, embed_dim=64, num_heads=2, decoder_dim=32, decoder_depth=1, decoder_heads=2)


def test_registries_hold_the_builtin_entries():
    assert {"audiomae++", "vit_mae"} <= set(MAE_MODELS.names())
    assert {"esc50", "fsdd", "folder"} <= set(MAE_DATA_SOURCES.names())
    assert {"log_mel", "rf_spectrogram", "rf_constellation"} <= set(MAE_TRANSFORMS.names())
    with pytest.raises(KeyError, match="registered: audiomae\\+\\+, vit_mae"):
        MAE_MODELS.get("nope")


def test_registration_checks_the_interface():
    registry = MaeRegistry("transform", MaeTransformBase)

    class NotATransform:
        pass

    with pytest.raises(TypeError, match="must subclass MaeTransformBase"):
        registry.register("x")(NotATransform)

    class Incomplete(MaeTransformBase):
        @property
        def output_shape(self):
            return (1, 8, 8)

    with pytest.raises(TypeError, match="does not implement"):
        registry.register("x")(Incomplete)


def test_a_new_transform_is_usable_by_name():
    @register_mae_transform("test_constant_image")
    class Constant(MaeTransformBase):
        @property
        def output_shape(self):
            return (1, 16, 8)

        @property
        def config(self):
            return {"name": "test_constant_image"}

        def __call__(self, signal, sample_rate):
            return np.full(self.output_shape, float(np.mean(signal)), dtype=np.float32)

    transform = build_mae_transform("test_constant_image")
    model = build_audiomae_model("audiomae++", "tiny", input_size=(16, 8), **SMALL)
    x = torch.from_numpy(np.stack([transform(np.ones(10), 16000)] * 2))
    assert model.encode(x).shape == (2, 64)


@pytest.mark.parametrize("name", MAE_MODELS.names())
@pytest.mark.parametrize("use_rope", [True, False])
def test_model_interface_and_shapes(name, use_rope):
    torch.manual_seed(0)
    model = build_audiomae_model(name, "tiny", input_size=(80, 200), use_rope=use_rope, **SMALL)
    assert isinstance(model, MaeModelBase)
    assert model.config["model_name"] == name
    for freq, frames in ((80, 200), (64, 48), (16, 4), (128, 100)):
        x = torch.randn(3, 1, freq, frames)
        patches = freq // 16 * (frames // 4)
        out = model(x)
        assert out["pred"].shape == (3, patches, 64) and out["mask"].shape == (3, patches)
        assert torch.isfinite(out["loss"])
        assert torch.equal(model.unpatchify(model.patchify(x), freq, frames), x)
        assert model.forward_features(x).shape == (3, 1 + patches, 64)
        for pooling in ("mean", "cls"):
            assert model.encode(x, pooling).shape == (3, 64)
    # 80 % of 250 patches masked
    assert int(model(torch.randn(2, 1, 80, 200))["mask"][0].sum()) == 200
    out["loss"].backward()
    unused = [n for n, p in model.named_parameters() if p.grad is None]
    assert not unused, f"parameters outside the pretraining graph: {unused}"


@pytest.mark.parametrize("name", ["audiomae++", "vit_mae"])
@pytest.mark.parametrize("constant_in_loss", [True, False])
def test_pretraining_loss_and_constant_patches(name, constant_in_loss):
    """Padding after a short clip (constant at the floor) is masked like any patch; it counts in the loss as in
    AudioMAE, or, with ``loss_on_constant_patches=False``, does not move it."""
    torch.manual_seed(0)
    overrides = dict(SMALL, loss_on_constant_patches=constant_in_loss)
    model = build_audiomae_model(name, "tiny", input_size=(16, 40), **overrides).eval()
    x = torch.randn(2, 1, 16, 40)
    x[0, :, :, 16:] = -2.0  # clip 0: 4 of its 10 patches are signal, 6 padding
    x[1, :, :4, :] = -2.0  # clip 1: a constant band inside a patch still varies: all 10 patches count
    informative = model.informative_patches(x)
    assert informative.tolist() == [[1.0] * 4 + [0.0] * 6, [1.0] * 10]
    torch.manual_seed(1)
    out = model(x, mask_ratio=0.5)
    per_patch = ((out["pred"] - out["target"]) ** 2).mean(-1).detach()
    counted = out["mask"] * (1.0 if constant_in_loss else informative)
    assert (out["mask"][0] * informative[0]).sum() < out["mask"][0].sum()  # some masked patches of clip 0 are padding
    assert out["loss"].item() == pytest.approx(float((per_patch * counted).sum() / counted.sum()), rel=1e-5)
    # which predictions move the loss: every masked patch's, or only those of masked patches that vary
    out["pred"].retain_grad()
    out["loss"].backward()
    moves = out["pred"].grad.abs().sum(-1) > 0
    assert torch.equal(moves, counted.bool())
    assert model.pretrain_loss == "MSE on the masked patches" if constant_in_loss else "vary" in model.pretrain_loss
    assert mae_constant_patch_share(model, x, batch_size=1) == pytest.approx(6 / 20)


def test_model_rejects_bad_inputs_and_configs():
    model = build_audiomae_model("audiomae++", "tiny", **SMALL)
    with pytest.raises(ValueError, match="not a multiple"):
        model.encode(torch.randn(1, 1, 80, 50))
    with pytest.raises(ValueError, match="expected input"):
        model.encode(torch.randn(1, 80, 200))
    with pytest.raises(ValueError, match="multiple of 4"):
        audiomae_config("tiny", embed_dim=60, num_heads=2)
    with pytest.raises(ValueError, match="unknown AudioMAE size"):
        audiomae_config("huge")


def test_named_sizes_are_the_vit_widths():
    assert [AUDIOMAE_SIZES[s]["embed_dim"] for s in ("tiny", "small", "base")] == [192, 384, 768]
    config = audiomae_config("tiny")
    assert (config["decoder_depth"], config["decoder_dim"], config["mask_ratio"]) == (4, 384, 0.8)
    assert (config["input_size"], config["patch_size"], config["block"], config["use_rope"]) == (
        (80, 200),
        (16, 4),
        "macaron",
        True,
    )


def test_rope_makes_attention_depend_on_position():
    torch.manual_seed(0)
    model = build_audiomae_model("audiomae++", "tiny", **SMALL).eval()
    x = torch.randn(1, 1, 16, 8)
    swapped = torch.cat([x[..., 4:], x[..., :4]], dim=-1)  # swap the two patches in time
    tokens, tokens_swapped = model.forward_features(x), model.forward_features(swapped)
    # Same patch content at another position gives another token (positions are encoded).
    assert not torch.allclose(tokens[0, 1], tokens_swapped[0, 2], atol=1e-5)


def test_classifier_wrapper_probe_freezes_encoder():
    model = build_audiomae_model("audiomae++", "tiny", **SMALL)
    probe = AudioMaeClassifier(model, 5, pooling="cls", freeze_encoder=True)
    logits = probe(torch.randn(4, 1, 80, 200))
    assert logits.shape == (4, 5)
    logits.sum().backward()
    assert all(p.grad is None for p in probe.encoder.parameters())
    assert probe.head[-1].weight.grad is not None
    full = AudioMaeClassifier(build_audiomae_model("vit_mae", "tiny", **SMALL), 3)
    full(torch.randn(2, 1, 80, 200)).sum().backward()
    assert full.encoder.patch_embed.weight.grad is not None


@pytest.mark.parametrize("name", MAE_TRANSFORMS.names())
def test_transform_interface(name):
    transform = build_mae_transform(name)
    assert isinstance(transform, MaeTransformBase)
    assert transform.config["name"] == name
    rng = np.random.default_rng(0)
    if transform.input_kind == "audio":
        signals = [
            (rng.normal(size=n).astype(np.float32) * 0.1, sr)
            for n, sr in ((16000, 16000), (800, 8000), (100000, 44100))
        ]
    else:
        signals = [(mae_synthetic_iq(m, n_samples=n), 1) for m, n in zip(MAE_IQ_MODULATIONS, (4096, 100, 20000, 64))]
    for signal, sr in signals:
        image = transform(signal, sr)
        assert image.shape == transform.output_shape and image.dtype == np.float32
        assert np.all(np.isfinite(image)) and -2.01 <= image.min() and image.max() <= 2.01
    # Outputs feed every registered model.
    _, freq, frames = transform.output_shape
    for model_name in MAE_MODELS.names():
        model = build_audiomae_model(model_name, "tiny", input_size=(freq, frames), **SMALL)
        batch = torch.from_numpy(np.stack([transform(s, sr) for s, sr in signals[:2]]))
        assert model.encode(batch).shape == (2, 64)


def test_rf_transforms_separate_modulations():
    constellation = build_mae_transform("rf_constellation")
    images = {m: constellation(mae_synthetic_iq(m, snr_db=25, seed=1)) for m in MAE_IQ_MODULATIONS}
    # BPSK puts its points on a line: far fewer occupied cells than 16-QAM.
    occupied = {m: int((img > -2).sum()) for m, img in images.items()}
    assert occupied["bpsk"] < occupied["qpsk"] < occupied["16qam"]
    with pytest.raises(ValueError, match="complex IQ"):
        constellation(np.zeros(100))


def test_log_mel_cache_and_broken_clips(fsdd_manifest, tmp_path):
    broken = tmp_path / "broken.wav"
    broken.write_bytes(b"RIFF1234WAVEfmt garbage")
    frame = pd.concat([fsdd_manifest.head(4), pd.DataFrame([{"path": str(broken), "label": 0}])])
    transform = build_mae_transform("log_mel", frames=48)
    first = mae_load_split(frame, transform, cache_dir=tmp_path / "cache")
    assert first["x"].shape == (4, 1, 80, 48) and len(first["y"]) == 4
    assert [f["path"] for f in first["failures"]] == [str(broken)]
    cached = sorted((tmp_path / "cache").glob("*/images.npy"))  # one vector-cache folder per transform config
    assert len(cached) == 1 and np.load(cached[0]).shape == (4, 80 * 48)
    cached[0].write_bytes(b"corrupt")  # a damaged cache is named and recomputed
    second = mae_load_split(frame, transform, cache_dir=tmp_path / "cache")
    assert np.array_equal(first["x"], second["x"])
    assert [f["path"] for f in second["failures"]] == [str(broken)]
    # Another transform config never reuses these entries.
    other = mae_load_split(
        frame.head(2), build_mae_transform("log_mel", frames=48, n_mels=64), cache_dir=tmp_path / "cache"
    )
    assert other["x"].shape == (2, 1, 64, 48)


@pytest.mark.parametrize("name", MAE_DATA_SOURCES.names())
def test_data_source_interface(name, fsdd_dir, tmp_path, monkeypatch):
    if name == "esc50":
        # A miniature ESC-50 layout (real FSDD audio, ESC-50's CSV format) exercises the fold logic offline.
        root = tmp_path / "ESC-50"
        (root / "meta").mkdir(parents=True)
        (root / "audio").mkdir()
        rows = []
        for i, wav in enumerate(sorted((fsdd_dir / "recordings").glob("*.wav"))[:10]):
            (root / "audio" / wav.name).write_bytes(wav.read_bytes())
            rows.append(
                {
                    "filename": wav.name,
                    "fold": i % 5 + 1,
                    "target": i % 2,
                    "category": ["dog", "rain"][i % 2],
                    "esc10": True,
                    "src_file": wav.stem,
                    "take": "A",
                }
            )
        pd.DataFrame(rows).to_csv(root / "meta" / "esc50.csv", index=False)
        from dataclasses import replace

        import lib.core.datasets as datasets

        # the registry expects ESC-50's 2,000 clips: accept this miniature copy for the test only
        monkeypatch.setitem(datasets.DATASETS, "esc50", replace(datasets.DATASETS["esc50"], min_files=10))
        source = build_mae_data_source("esc50", path=root, test_fold=2, download=False)
        manifest = source.manifest()
        assert set(manifest[manifest.split == "test"]["fold"]) == {2}
        assert source.class_names == ["dog", "rain"]
    elif name == "fsdd":
        source = build_mae_data_source("fsdd", path=fsdd_dir, download=False)  # two speakers held out
        manifest = source.manifest()
        test_speakers = set(manifest[manifest.split == "test"].speaker)
        assert test_speakers == set(source.held_out_speakers) and len(test_speakers) == 2 and len(manifest) == 3000
        assert test_speakers.isdisjoint(manifest[manifest.split == "train"].speaker)  # new voices at test time
        assert (manifest.split == "test").sum() == 1000
        official = build_mae_data_source("fsdd", path=fsdd_dir, download=False, test_speakers=0).manifest()
        official_test = official[official.split == "test"]
        # FSDD's own split: takes 0-4 of every speaker and digit are the test set, the other 45 train
        assert len(official_test) == 300 and set(official_test["index"]) == set(range(5))
        assert (official_test.groupby(["speaker", "label"]).size() == 5).all()
        assert (official[official.split == "train"]["index"] >= 5).all()
        assert set(official[official.split == "test"].speaker) == set(official.speaker)  # the same six in both
        with pytest.raises(ValueError, match="test_speakers must be between 1 and 5"):
            build_mae_data_source("fsdd", path=fsdd_dir, download=False, test_speakers=6).manifest()
    else:
        files = sorted((fsdd_dir / "recordings").glob("*.wav"))[:12]
        pd.DataFrame({"filename": [f.name for f in files], "label": [f.name[0] for f in files]}).to_csv(
            tmp_path / "labels.csv", index=False
        )
        source = build_mae_data_source("folder", path=fsdd_dir / "recordings", labels_csv=tmp_path / "labels.csv")
        manifest = source.manifest()
        assert len(manifest) == 12 and set(manifest.split) == {"train", "test"}
    assert isinstance(source, MaeDataSourceBase)
    assert {"path", "label", "label_name", "split"} <= set(manifest.columns)
    assert manifest["label"].between(0, len(source.class_names) - 1).all()


def test_folder_with_speakers_in_its_file_names_holds_speakers_out(fsdd_dir, tmp_path):
    """Speech Commands' layout (word folders, {speaker}_nohash_{n}.wav): the test split is new voices."""
    for wav in sorted((fsdd_dir / "recordings").glob("[0-2]_*_[0-3].wav")):
        digit, speaker, take = wav.stem.split("_")
        target = tmp_path / "commands" / ["zero", "one", "two"][int(digit)] / f"{speaker}_nohash_{take}.wav"
        target.parent.mkdir(parents=True, exist_ok=True)
        target.symlink_to(wav)
    (tmp_path / "commands" / "_background_noise_").mkdir()
    (tmp_path / "commands" / "_background_noise_" / "noise.wav").symlink_to(wav)
    source = build_mae_data_source("folder", path=tmp_path / "commands", test_fraction=0.2, seed=0)
    manifest = source.manifest()
    assert len(manifest) == 3 * 6 * 4 and manifest["speaker"].nunique() == 6  # the noise folder is no label
    test, train = manifest[manifest.split == "test"], manifest[manifest.split == "train"]
    assert set(test.speaker).isdisjoint(train.speaker) and set(test.label_name) == {"zero", "one", "two"}
    assert source.held_out_speakers == sorted(set(test.speaker))
    for wav in sorted((fsdd_dir / "recordings").glob("[0-2]_*_[0-3].wav")):  # AudioMNIST: speaker folders
        target = tmp_path / "audiomnist" / wav.stem.split("_")[1] / wav.name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.symlink_to(wav)
    source = build_mae_data_source("folder", path=tmp_path / "audiomnist", test_fraction=0.2, seed=0)
    manifest = source.manifest()  # the names' take numbers would put every speaker on both sides
    test, train = manifest[manifest.split == "test"], manifest[manifest.split == "train"]
    assert set(manifest.label_name) == {"0", "1", "2"} and set(test.speaker).isdisjoint(train.speaker)
    assert len(source.held_out_speakers) >= 1


def test_split_and_subsample_are_stratified():
    labels = np.repeat(np.arange(4), 10)
    split = mae_stratified_split(labels, 0.3, seed=0)
    for label in range(4):
        assert (split[labels == label] == "test").sum() == 3
    frame = pd.DataFrame({"path": [f"{i}.wav" for i in range(40)], "label": labels})
    small = mae_subsample(frame, 8, seed=0)
    assert len(small) == 8 and small["label"].value_counts().to_dict() == {0: 2, 1: 2, 2: 2, 3: 2}


def test_finetune_patch_drop_only_while_training_and_restored_after():
    from lib.mae.mae_training import mae_train_classifier

    torch.manual_seed(0)
    classifier = AudioMaeClassifier(build_audiomae_model("audiomae++", "tiny", **SMALL), 2, patch_drop=0.5)
    x = torch.randn(4, 1, 80, 200)
    classifier.train()
    assert not torch.allclose(classifier.embed(x), classifier.embed(x))  # another half of the patches each call
    classifier.eval()
    whole = classifier.encoder.encode(x)
    assert torch.equal(classifier.embed(x), whole)  # evaluation always sees every patch
    # an embedding from half the patches is the mean over fewer tokens of the same encoder
    latent, mask, _, _ = classifier.encoder.forward_encoder(x, 0.5)
    assert latent.shape[1] - 1 == int((mask[0] == 0).sum()) == mask.shape[1] // 2
    # training on a separable toy set: patch dropping set for the run, the classifier's own value restored
    y = np.array([0, 1] * 8)
    specs = torch.randn(16, 1, 80, 200) + torch.as_tensor(y, dtype=torch.float32).view(-1, 1, 1, 1)
    classifier.patch_drop = 0.0
    history = mae_train_classifier(
        classifier, specs, y, epochs=6, batch_size=8, lr=2e-3, patch_drop=0.3, progress=False
    )
    assert history["loss"][-1] < history["loss"][0] and history["train_accuracy"][-1] >= 0.9
    assert classifier.patch_drop == 0.0 and not classifier.training
    with pytest.raises(ValueError, match="augment must be one of"):
        mae_train_classifier(classifier, specs, y, epochs=1, augment=True, progress=False)
    with pytest.raises(ValueError, match="patch_drop must be in"):
        mae_train_classifier(classifier, specs, y, epochs=1, patch_drop=1.0, progress=False)


def test_accuracy_interval_and_paired_comparison_of_two_encoders():
    from lib.core.accuracy import accuracy_interval, paired_comparison

    low, high = accuracy_interval(296, 300)
    assert low == pytest.approx(0.9662, abs=1e-3) and high == pytest.approx(0.9948, abs=1e-3)  # Wilson
    assert all(np.isnan(accuracy_interval(0, 0)))
    y = np.zeros(100, int)
    a = y.copy()
    b = y.copy()
    b[:20] = 1  # the second classifier misses 20 clips the first gets right
    assert paired_comparison(y, a, b) == pytest.approx(
        {
            "n": 100,
            "first_accuracy": 1.0,
            "second_accuracy": 0.8,
            "only_first_right": 20,
            "only_second_right": 0,
            "mcnemar_p": 2 * 0.5**20,
        }
    )
    b[:2], a[2:4] = 0, 1  # now 18 against 2 ... still a difference; 2 against 2 is none
    assert paired_comparison(y, a, b)["mcnemar_p"] < 0.01
    assert paired_comparison(y, a, a)["mcnemar_p"] == 1.0
