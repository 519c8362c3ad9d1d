# %% [markdown]
# # Radio IQ recordings in the explorer: loader, pictures and a no-model encoder
#
# Carried only by the `fiftyone_explorer_mae` variant of the notebook. It registers:
#
# - the data set `rf` (alias `iq`): a folder of IQ recordings (`.sigmf-data` with `.sigmf-meta`,
#   `.cfile`, `.npy`; see `lib.core.iq_files`), labelled by sub-folder, CSV or SigMF annotation.
#   Without `data_path` it writes a demo set of synthetic baseband recordings (BPSK, QPSK, 8-PSK,
#   16-QAM at several signal-to-noise ratios, as SigMF) and loads that;
# - the transforms `iq_spectrogram` (the short-time spectrum of the complex signal, both sides,
#   zero frequency in the middle, dB re. peak) and `iq_constellation` (the 2-D histogram of the
#   I/Q plane after RMS normalisation, the picture modulation is read from), both from the
#   AudioMAE transform registry (`rf_spectrogram`, `rf_constellation`), as previews;
# - the encoder `transform_stats`: no model, the transform's picture summarised (spectrogram:
#   mean and standard deviation over time of each frequency bin; constellation: the picture
#   pooled to 16 x 16), the RF counterpart of the MFCC baseline.

# %%
import hashlib
import json
from pathlib import Path

import numpy as np

from lib.core.atomic_io import atomic_output
from lib.core.iq_files import load_iq_folder, read_iq, write_sigmf
from lib.explorer.audio_embedders import register_explorer_encoder
from lib.explorer.explorer_batches import ExplorerAudioReader
from lib.explorer.explorer_data import ExplorerData, register_explorer_dataset
from lib.explorer.spectrogram_media import register_explorer_transform
from lib.mae.mae_transforms import MAE_IQ_MODULATIONS, build_mae_transform, mae_synthetic_iq

RF_TRANSFORMS = {"iq_spectrogram": "rf_spectrogram", "iq_constellation": "rf_constellation"}


class ExplorerIqReader:
    """Reads one IQ recording: ``reader(path) -> (complex64 samples, sample_rate)``."""

    signal = "iq"

    def __init__(self, sample_rate=None, max_samples: int | None = None):
        self.sample_rate = sample_rate
        self.max_samples = max_samples

    def __call__(self, path):
        iq, rate, _info = read_iq(path, sample_rate=self.sample_rate, max_samples=self.max_samples)
        return iq, rate


# %% [markdown]
# ## The `rf` data set


# %%
def rf_demo_recordings(folder, per_class: int = 100, n_samples: int = 4096, sample_rate: float = 1e6, seed: int = 0):
    """Write (once) ``per_class`` synthetic SigMF recordings per modulation into ``folder``; return ``folder``."""
    folder = Path(folder).expanduser()
    marker = folder / "demo.json"
    settings = {"per_class": per_class, "n_samples": n_samples, "sample_rate": sample_rate, "seed": seed}
    if marker.exists() and json.loads(marker.read_text()) == settings:
        return folder
    rng = np.random.default_rng(seed)
    for modulation in MAE_IQ_MODULATIONS:
        (folder / modulation).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            snr = float(rng.choice([0.0, 5.0, 10.0, 20.0]))
            iq = mae_synthetic_iq(modulation, n_samples, snr_db=snr, seed=int(rng.integers(1 << 31)))
            write_sigmf(folder / modulation / f"{modulation}_{i:04d}_snr{snr:g}", iq, sample_rate, label=modulation)
    with atomic_output(marker) as tmp:
        tmp.write_text(json.dumps(settings))
    return folder


@register_explorer_dataset("rf")
def explorer_rf(
    data_path=None, labels_csv=None, label_column=None, sample_rate=None, cache_dir=None, **_options
) -> ExplorerData:
    demo = data_path is None
    demo_root = Path(cache_dir).expanduser().parent if cache_dir else Path("~/.cache/audiolens").expanduser()
    folder = rf_demo_recordings(demo_root / "rf-demo") if demo else Path(data_path)
    manifest = load_iq_folder(
        folder, labels_csv=labels_csv, label_column=label_column or "label", sample_rate=sample_rate
    )
    if demo:
        manifest["snr_db"] = manifest.path.str.extract(r"_snr([\d.]+)\.sigmf")[0].astype(float)
    label = label_column or "label"
    group = next((c for c in ("recording", "session", "source") if c in manifest.columns), None)
    description = (
        f"synthetic IQ recordings ({', '.join(MAE_IQ_MODULATIONS)}; SNR 0-20 dB) in {folder}"
        if demo
        else f"IQ recordings in {folder}"
    )
    return ExplorerData(
        "rf",
        manifest,
        label,
        group,
        "fold" if "fold" in manifest.columns else None,
        "iq",
        description,
        {"unreadable": len(manifest.attrs.get("failed", []))},
    )


# %% [markdown]
# ## Pictures of IQ recordings


# %%
class IqPreviewRenderer:
    """PNG of an RF transform's picture (values about [-2, 2], one fixed colour scale), picklable."""

    signal = "iq"

    def __init__(self, out_dir, name: str = "iq_spectrogram", cmap: str = "viridis", width: int = 256, **options):
        if name not in RF_TRANSFORMS:
            raise ValueError(f"unknown RF transform {name!r}; choose {', '.join(RF_TRANSFORMS)}")
        self.out_dir, self.name, self.cmap, self.width = Path(out_dir), name, cmap, int(width)
        self.transform = build_mae_transform(RF_TRANSFORMS[name], **options)
        self._key = json.dumps([self.transform.config, cmap, width], sort_keys=True)

    def png_path(self, path) -> Path:
        digest = hashlib.sha1(f"{Path(path).resolve()}|{Path(path).stat().st_mtime_ns}|{self._key}".encode())
        return self.out_dir / f"{Path(path).name.split('.')[0][:60]}-{digest.hexdigest()[:10]}.png"

    def image(self, iq, sample_rate) -> np.ndarray:
        return self.transform(iq, int(sample_rate))[0]

    def render(self, path, iq=None, sample_rate=None) -> str:
        import matplotlib
        from PIL import Image

        png = self.png_path(path)
        if png.exists():
            return str(png)
        if iq is None:
            iq, sample_rate, _ = read_iq(path)
        norm = np.clip((self.image(iq, sample_rate) + 2.0) / 4.0, 0.0, 1.0)
        rgb = (matplotlib.colormaps[self.cmap](norm)[..., :3] * 255).astype(np.uint8)
        height = self.width if self.name == "iq_constellation" else self.width // 2
        self.out_dir.mkdir(parents=True, exist_ok=True)
        with atomic_output(png) as tmp:
            Image.fromarray(rgb).resize((self.width, height), Image.Resampling.NEAREST).save(
                tmp, format="PNG", compress_level=1
            )
        return str(png)

    def describe(self) -> str:
        c = self.transform.config
        if self.name == "iq_spectrogram":
            return (
                f"**IQ spectrogram previews**: short-time spectrum of the complex samples ({c['n_fft']}-point FFT, "
                f"hop {c['hop_length']}, Hann window, both sides with zero frequency in the middle, first "
                f"{c['frames']} frames), dB relative to the recording's peak, floor -{c['top_db']:g} dB; frequency "
                "up, time right."
            )
        return (
            f"**IQ constellation previews**: 2-D histogram ({c['bins']} x {c['bins']} bins over +/-{c['extent']:g}) "
            "of the I (right) and Q (up) values after scaling to unit RMS, log density: the picture a modulation is "
            "read from."
        )


@register_explorer_transform("iq_spectrogram")
def rf_spectrogram_renderer(out_dir, paths=None, **_options) -> IqPreviewRenderer:
    return IqPreviewRenderer(out_dir, "iq_spectrogram")


@register_explorer_transform("iq_constellation")
def rf_constellation_renderer(out_dir, paths=None, **_options) -> IqPreviewRenderer:
    return IqPreviewRenderer(out_dir, "iq_constellation")


# %% [markdown]
# ## The `transform_stats` encoder


# %%
@register_explorer_encoder("transform_stats")
class TransformStatsEmbedder:
    """No model: summary statistics of a transform's picture (see the module notes)."""

    kind = "transform_stats"
    weights = "none"

    def __init__(self, transform: str = "iq_spectrogram", iq_sample_rate=None, pool: int = 16):
        self.transform_name = transform
        self.iq_sample_rate = iq_sample_rate
        self.pool = int(pool)
        if transform in RF_TRANSFORMS:
            self.transform = build_mae_transform(RF_TRANSFORMS[transform])
        elif transform == "log_mel":
            self.transform = build_mae_transform("log_mel")
        else:
            raise ValueError(
                f"transform_stats works with log_mel, iq_spectrogram or iq_constellation, not {transform!r}"
            )
        self.signal = "iq" if self.transform.input_kind == "iq" else "audio"
        self.sample_rate = int(getattr(self.transform, "sample_rate", 16000))
        self.name = f"stats-{transform}"

    def reader(self):
        return ExplorerIqReader(self.iq_sample_rate) if self.signal == "iq" else ExplorerAudioReader(self.sample_rate)

    def load(self):
        return self

    def config(self) -> dict:
        return {"kind": self.kind, "name": self.name, "transform": self.transform.config, "pool": self.pool}

    def info(self) -> dict:
        return dict(self.config(), weights=self.weights)

    def describe(self) -> str:
        what = (
            f"the picture pooled to {self.pool} x {self.pool}"
            if self.transform_name == "iq_constellation"
            else "the mean and standard deviation over time of each frequency bin"
        )
        return f"**Transform statistics** (no model): `{self.transform_name}` ({self.transform.config}), {what}."

    def prepare(self, signal, sample_rate=None) -> np.ndarray:
        image = self.transform(signal, int(sample_rate or self.sample_rate))[0]
        if self.transform_name == "iq_constellation":
            b = image.shape[0] // self.pool * self.pool
            pooled = image[:b, :b].reshape(self.pool, b // self.pool, self.pool, b // self.pool).mean(axis=(1, 3))
            return pooled.ravel().astype(np.float32)
        return np.concatenate([image.mean(axis=1), image.std(axis=1)]).astype(np.float32)

    def embed_prepared(self, items) -> np.ndarray:
        return np.stack(items).astype(np.float32)
