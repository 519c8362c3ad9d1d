# %% [markdown]
# # Word samples: N clips per spoken word
#
# The layer-embedding comparison needs a balanced set of spoken words: the same number of
# clips for every word, spread over as many speakers as possible so that a layer cannot
# "separate words" by recognising voices. `select_word_samples` picks them from
#
# - `"fsdd"`: the Free Spoken Digit Dataset (offline; the digits become the words
#   `zero` ... `nine`),
# - `"speech_commands"`: Speech Commands v0.02 (35 words, thousands of speakers; downloaded on
#   demand, 2.3 GB),
# - a folder path: any labelled folder (`load_labelled_folder`: sub-folders per word, a
#   labels CSV, or `{word}_{speaker}_{index}` file names).
#
# The result is a manifest with `path`, `word`, `speaker` and `file` columns (plus whatever
# the data set provides), sorted by word.

# %%
from pathlib import Path

import numpy as np
import pandas as pd

from lib.core.datasets import load_fsdd, load_speech_commands
from lib.core.labelled_folders import load_labelled_folder

FSDD_DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
SPEECH_COMMANDS_DEFAULT_WORDS = ("yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go")


def word_source_manifest(
    source: str = "fsdd", data_path=None, words=None, labels_csv=None, download: bool = True
) -> pd.DataFrame:
    """All clips of ``source`` as a manifest with ``path, word, speaker, file`` columns."""
    if source == "fsdd":
        manifest = load_fsdd(data_path, download=download)
        manifest["word"] = [FSDD_DIGIT_WORDS[int(d)] for d in manifest["label"]]
    elif source == "speech_commands":
        wanted = list(words) if words is not None else list(SPEECH_COMMANDS_DEFAULT_WORDS)
        manifest = load_speech_commands(data_path, words=wanted, download=download)
        manifest["word"] = manifest["label"].astype(str)
    else:
        folder = Path(data_path or source).expanduser()
        if not folder.is_dir():
            raise FileNotFoundError(
                f"word source {source!r} is neither 'fsdd', 'speech_commands' nor an existing folder "
                f"({folder}); pass a folder of labelled clips (sub-folders per word, a labels CSV, or "
                "files named word_speaker_index.wav)"
            )
        manifest = load_labelled_folder(folder, labels_csv=labels_csv)
        manifest["word"] = manifest["label"].astype(str)
    if "speaker" not in manifest.columns:
        manifest["speaker"] = "unknown"
    manifest["speaker"] = manifest["speaker"].astype(str)
    manifest["file"] = [Path(p).name for p in manifest["path"]]
    return manifest


def select_word_samples(
    source: str = "fsdd",
    words=None,
    samples_per_word: int = 20,
    data_path=None,
    seed: int = 0,
    labels_csv=None,
    split=None,
    download: bool = True,
    min_clips_per_word: int = 2,
) -> pd.DataFrame:
    """``samples_per_word`` clips of each word, spread evenly over speakers.

    ``words``: the words to keep (FSDD accepts digit names or the digits themselves; None:
    all digits, or Speech Commands' ten command words, or every word of a folder).
    ``split``: keep only that split (``"train"``, ``"test"``...) when the manifest has one.
    Speakers are drawn round-robin (in a seeded random order) so every word mixes voices.
    A word with fewer clips than asked keeps all it has, and says so; a word that is not in
    the data set is an error listing the words that are. With ``words=None``, words with fewer
    than ``min_clips_per_word`` clips (nothing to cross-validate) are left out, and named.
    """
    if samples_per_word is not None and int(samples_per_word) < 1:
        raise ValueError(f"samples_per_word must be at least 1, not {samples_per_word}")
    manifest = word_source_manifest(source, data_path=data_path, words=words, labels_csv=labels_csv, download=download)
    if split is not None:
        if "split" not in manifest.columns:
            raise ValueError(f"{source}: the manifest has no split column; use split=None")
        manifest = manifest[manifest["split"] == split]
    available = sorted(manifest["word"].unique(), key=str)
    if words is None:
        chosen = list(FSDD_DIGIT_WORDS) if source == "fsdd" else available
        counts = manifest["word"].value_counts()
        too_few = [w for w in chosen if counts.get(w, 0) < min_clips_per_word]
        if too_few and len(too_few) < len(chosen):  # every word of a folder: one clip cannot be cross-validated
            chosen = [w for w in chosen if w not in too_few]
            print(
                f"{source}: left out {len(too_few)} word(s) with fewer than {min_clips_per_word} clips: "
                f"{', '.join(f'{w} ({counts.get(w, 0)})' for w in too_few)}"
            )
    else:
        chosen = []
        for word in words:
            word = str(word)
            if source == "fsdd" and word.isdigit() and 0 <= int(word) <= 9:
                word = FSDD_DIGIT_WORDS[int(word)]
            chosen.append(word)
    missing = [w for w in chosen if w not in set(available)]
    if missing:
        raise ValueError(f"{source}: no clips for word(s) {missing}; available words: {available}")
    rng = np.random.default_rng(seed)
    picked, short = [], []
    for word in chosen:
        clips = manifest[manifest["word"] == word]
        by_speaker = {
            s: list(rng.permutation(group.index.to_numpy())) for s, group in clips.groupby("speaker", sort=True)
        }
        order = list(rng.permutation(sorted(by_speaker)))
        wanted = len(clips) if samples_per_word is None else int(samples_per_word)
        rows = []
        while len(rows) < wanted and any(by_speaker[s] for s in order):
            for speaker in order:
                if by_speaker[speaker] and len(rows) < wanted:
                    rows.append(by_speaker[speaker].pop())
        if len(rows) < wanted:
            short.append(f"{word}: {len(rows)}")
        picked.extend(rows)
    if short:
        print(f"Fewer clips than the {samples_per_word} asked for: {', '.join(short)}")
    selection = manifest.loc[picked].copy()
    selection["word"] = pd.Categorical(selection["word"], categories=chosen, ordered=True)
    selection = selection.sort_values(["word", "speaker", "file"]).reset_index(drop=True)
    selection["word"] = selection["word"].astype(str)
    return selection


def word_sample_summary(selection: pd.DataFrame) -> pd.DataFrame:
    """Clips per word and speaker (a words x speakers count table with totals)."""
    table = pd.crosstab(selection["word"], selection["speaker"], margins=True, margins_name="total")
    order = list(dict.fromkeys(selection["word"])) + ["total"]
    return table.loc[order]
