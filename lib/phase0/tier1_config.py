# %% [markdown]
# # Tier 1 configuration: one YAML file, every key overridable
#
# The three Tier 1 experiments share one nested configuration (`configs/phase0_tier1.yaml`
# mirrors `TIER1_DEFAULT_CONFIG` below; a test keeps them identical). The resolved config is
# built in layers, later ones winning:
#
# 1. the defaults below;
# 2. a YAML file (`config_path`), any subset of the keys;
# 3. `overrides`: a dict of dotted keys (`{"model.hidden": 128, "train.lr": 0.001}`) or of
#    nested sections (`{"train": {"lr": 0.001}}`);
# 4. the notebook's flat parameters (`train_max_steps`, `context_horizons_k`,
#    `diag_n_eval_utterances`, ...; `TIER1_FLAT_PARAMETERS` maps each to its dotted key),
#    applied when they are not `None`.
#
# Unknown keys are errors that name the closest known key; values are type-checked against
# the defaults. The resolved config is written beside the results (`phase0_tier1_config.yaml`)
# with its hash, so a run can be repeated with `-p config_path <that file>`.

# %%
import copy
import difflib
import hashlib
import json
from pathlib import Path

import yaml

from lib.core.atomic_io import atomic_write_text
from lib.phase0.phase0_metrics import phase0_read_yaml

TIER1_DEFAULT_CONFIG = {
    "seed": 0,
    "data": {
        "subset": "auto",  # auto: train-clean-100 when present, else the local 251-speaker sample
        "data_path": None,  # explicit LibriSpeech folder
        "max_utterances": None,  # cap, split proportionally between train and eval speakers (None: all)
        "max_seconds": 12.0,  # cut each utterance to this many seconds (None: whole utterances)
        "n_eval_speakers": None,  # held-out speakers (None: 51 of 251, proportionally elsewhere)
        "chunk_utterances": 16,  # utterances per store part: the unit of resumption and of sharding
    },
    "encoder": {
        "name": "logmel",  # logmel, a codec hub id (kyutai/mimi ...) or bundled/whisper-tiny.en
        "layer": None,  # speech models: hidden-state layer (None: the last)
        "whisper_mode": "padded",  # bundled Whisper: padded (30 s reference) or clip
        "local_files_only": False,
    },
    "context": {
        "window": 8,  # context frames the model sees (oldest first, ending at the current frame t)
        "horizons_k": [1, 2, 4],  # predict x[t+k] - x[t] for each k
    },
    "model": {
        "kind": "mlp",  # mlp or transformer (causal, over the context frames)
        "hidden": 256,
        "layers": 2,
        "heads": 4,  # transformer attention heads
        "dropout": 0.0,
        "target_scaling": "per_dim",  # per_dim (RMS of train deltas), global (one scale) or none
    },
    "train": {
        "max_steps": 500,
        "batch_size": 256,
        "lr": 0.002,
        "weight_decay": 0.01,
        "warmup_steps": 50,
        "grad_clip": 1.0,
        "max_eval_samples": 4000,  # eval-speaker windows scored (sampled evenly, seeded)
        "num_workers": 0,  # DataLoader workers; utterances are sharded across workers and ranks
        "shuffle_buffer": 8192,  # windows shuffled together within a worker
        "compile": False,  # torch.compile the models
        "amp": False,  # autocast mixed precision
        "amp_dtype": "bfloat16",  # bfloat16 or float16 (float16 uses a gradient scaler on CUDA)
        "checkpoint_every": 250,  # steps between checkpoints (the last step is always saved)
        "log_every": 50,
    },
    "rollout": {
        "enabled": True,  # autoregressive generation from real eval contexts
        "steps": 12,
        "n_contexts": 48,
    },
    "diag": {
        "scheme": "mean_vq64",  # the Phase 0 conditioning scheme whose cells key the memory
        "phase0_context_frames": 4,  # Phase 0 context window W when Phase 0 is fitted here (no phase0_dir)
        "max_train_samples": 20000,  # train windows that estimate the cluster means (and fit k-means here)
        "n_eval_utterances": 40,  # eval utterances sampled for the diagnostic
        "segments_per_utt": 16,  # windows sampled per eval utterance
        "memory_mode": "input",  # input (extra input to the trunk) or bias (added to the predicted mean)
        "memory_dropout": 0.5,  # share of training windows with zero memory (so zero memory is a fair baseline)
        "finetune_steps": 200,
        "lr": 0.001,
        "models": ["vmf", "gaussian"],
        "control": True,  # also fine-tune a copy with uninformative (shuffled-window) memory: the null level
    },
    "exp3": {
        "representations": [
            "logmel",
            "bundled/whisper-tiny.en",
            "kyutai/mimi",
            "facebook/encodec_24khz",
            "descript/dac_16khz",
        ],
        "random_controls": ["bundled/whisper-tiny.en"],  # also run these with random weights
        "max_utterances": 80,
        "max_seconds": 8.0,
        "common_rate": 12.5,  # Hz: every representation is also mean-pooled to this rate
        "context_frames": 4,  # Phase 0 context window W (frames at each representation's rate)
        "max_steps": 250,  # Exp 1 training steps per representation (k = 1 only)
        "max_fit_frames": 20000,  # Phase 0 fits (PCA / k-means) on at most this many train frames
        "whisper_mode": "padded",
    },
}

# %%
TIER1_CHOICES = {
    "model.kind": ("mlp", "transformer"),
    "model.target_scaling": ("per_dim", "global", "none"),
    "train.amp_dtype": ("bfloat16", "float16"),
    "encoder.whisper_mode": ("padded", "clip"),
    "exp3.whisper_mode": ("padded", "clip"),
    "diag.memory_mode": ("input", "bias"),
    "diag.scheme": ("mean_vq64", "pca8_vq256", "pca8_quartile"),
}

# Flat notebook parameters -> dotted config keys (None in the notebook: keep the config's value).
TIER1_FLAT_PARAMETERS = {
    "train_max_steps": "train.max_steps",
    "train_max_eval_samples": "train.max_eval_samples",
    "train_num_workers": "train.num_workers",
    "train_compile": "train.compile",
    "train_amp": "train.amp",
    "train_amp_dtype": "train.amp_dtype",
    "context_horizons_k": "context.horizons_k",
    "rollout_enabled": "rollout.enabled",
    "diag_max_train_samples": "diag.max_train_samples",
    "diag_n_eval_utterances": "diag.n_eval_utterances",
    "diag_segments_per_utt": "diag.segments_per_utt",
    "encoder": "encoder.name",
    "subset": "data.subset",
    "data_path": "data.data_path",
    "max_utterances": "data.max_utterances",
    "max_seconds": "data.max_seconds",
    "local_files_only": "encoder.local_files_only",
    "seed": "seed",
}


class Tier1ConfigError(ValueError):
    """A Tier 1 setting is unknown or has the wrong type; the message names it and the fix."""


def tier1_flatten(config: dict, prefix: str = "") -> dict:
    """``{"train.max_steps": 500, ...}`` from a nested config."""
    flat = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(tier1_flatten(value, name + "."))
        else:
            flat[name] = value
    return flat


def _tier1_set(config: dict, dotted: str, value, source: str) -> None:
    known = tier1_flatten(TIER1_DEFAULT_CONFIG)
    if dotted not in known:
        close = difflib.get_close_matches(dotted, list(known), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else f"; known keys: {sorted(known)}"
        raise Tier1ConfigError(f"{source}: unknown Tier 1 setting {dotted!r}{hint}")
    default = known[dotted]
    problem = None
    if isinstance(default, bool):
        problem = None if isinstance(value, bool) else "True or False"
    elif isinstance(default, int) and value is not None:
        problem = None if isinstance(value, int) and not isinstance(value, bool) else "a whole number"
    elif isinstance(default, float) and value is not None:
        problem = None if isinstance(value, (int, float)) and not isinstance(value, bool) else "a number"
    elif isinstance(default, list):
        problem = None if isinstance(value, (list, tuple)) else "a list"
    elif isinstance(default, str):
        problem = None if isinstance(value, str) else "a string"
    if problem:
        raise Tier1ConfigError(f"{source}: {dotted} must be {problem}, got {value!r}")
    if dotted in TIER1_CHOICES and value not in TIER1_CHOICES[dotted]:
        raise Tier1ConfigError(f"{source}: {dotted} must be one of {TIER1_CHOICES[dotted]}, got {value!r}")
    node = config
    parts = dotted.split(".")
    for part in parts[:-1]:
        node = node[part]
    node[parts[-1]] = list(value) if isinstance(value, tuple) else value


def _tier1_apply(config: dict, layer: dict, source: str) -> None:
    if not isinstance(layer, dict):
        raise Tier1ConfigError(f"{source}: expected a mapping of settings, got {type(layer).__name__}")
    for key, value in layer.items():
        if isinstance(value, dict) and isinstance(TIER1_DEFAULT_CONFIG.get(key), dict):
            _tier1_apply(config, {f"{key}.{k}": v for k, v in value.items()}, source)
        else:
            _tier1_set(config, str(key), value, source)


def _tier1_check(config: dict) -> None:
    horizons = config["context"]["horizons_k"]
    if not horizons or any(not isinstance(k, int) or isinstance(k, bool) or k < 1 for k in horizons):
        raise Tier1ConfigError(f"context.horizons_k must be a list of whole numbers >= 1, got {horizons!r}")
    if len(set(horizons)) != len(horizons):
        raise Tier1ConfigError(f"context.horizons_k has repeated horizons: {horizons!r}")
    positive = [
        "context.window",
        "model.hidden",
        "model.layers",
        "model.heads",
        "train.max_steps",
        "train.batch_size",
        "train.max_eval_samples",
        "train.shuffle_buffer",
        "train.checkpoint_every",
        "train.log_every",
        "rollout.steps",
        "rollout.n_contexts",
        "diag.max_train_samples",
        "diag.n_eval_utterances",
        "diag.segments_per_utt",
        "diag.finetune_steps",
        "diag.phase0_context_frames",
        "data.chunk_utterances",
        "exp3.max_utterances",
        "exp3.context_frames",
        "exp3.max_steps",
        "exp3.max_fit_frames",
    ]
    flat = tier1_flatten(config)
    for key in positive:
        if flat[key] is None or flat[key] < 1:
            raise Tier1ConfigError(f"{key} must be 1 or more, got {flat[key]!r}")
    for key in ("data.max_utterances", "data.n_eval_speakers"):
        if flat[key] is not None and flat[key] < 1:
            raise Tier1ConfigError(f"{key} must be 1 or more (or None for all), got {flat[key]!r}")
    if flat["train.num_workers"] < 0:
        raise Tier1ConfigError(f"train.num_workers must be 0 or more, got {flat['train.num_workers']!r}")
    if not 0.0 <= flat["diag.memory_dropout"] < 1.0:
        raise Tier1ConfigError(f"diag.memory_dropout must be in [0, 1), got {flat['diag.memory_dropout']!r}")
    unknown = [m for m in flat["diag.models"] if m not in ("vmf", "gaussian")]
    if unknown or not flat["diag.models"]:
        raise Tier1ConfigError(f"diag.models must list vmf and/or gaussian, got {flat['diag.models']!r}")


# %%
def load_tier1_config(path=None, overrides: dict | None = None, flat: dict | None = None) -> dict:
    """The resolved config: defaults < YAML ``path`` < ``overrides`` < non-None ``flat`` parameters."""
    config = copy.deepcopy(TIER1_DEFAULT_CONFIG)
    if path is not None:
        path = Path(path).expanduser()
        _tier1_apply(config, phase0_read_yaml(path, "Tier 1 config", Tier1ConfigError), str(path))
    if overrides:
        _tier1_apply(config, dict(overrides), "overrides")
    for name, value in (flat or {}).items():
        if value is None:
            continue
        if name not in TIER1_FLAT_PARAMETERS:
            raise Tier1ConfigError(f"{name} is not a Tier 1 parameter; known: {sorted(TIER1_FLAT_PARAMETERS)}")
        _tier1_set(config, TIER1_FLAT_PARAMETERS[name], value, f"parameter {name}")
    _tier1_check(config)
    return config


def tier1_config_hash(config: dict, sections=None) -> str:
    """SHA-256 (first 16 hex digits) of the config, or of some of its sections / dotted keys."""
    flat = tier1_flatten(config)
    if sections is not None:
        flat = {k: v for k, v in flat.items() if any(k == s or k.startswith(s + ".") for s in sections)}
    return hashlib.sha256(json.dumps(flat, sort_keys=True, default=str).encode()).hexdigest()[:16]


def write_tier1_config(config: dict, path) -> Path:
    """The resolved config as YAML, with its hash, so ``-p config_path <file>`` repeats the run."""
    header = (
        "# Phase 0 Tier 1 settings used for this run; repeat it with -p config_path <this file>\n"
        f"# config_hash: {tier1_config_hash(config)}\n"
    )
    return atomic_write_text(path, header + yaml.safe_dump(config, sort_keys=False))
