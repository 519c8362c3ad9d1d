# %% [markdown]
# # Digit clips recorded elsewhere: the cross-dataset evaluation folder
#
# The honest test of a digit recogniser is audio it has never heard anything like: other
# speakers, other microphones, other rooms. `load_digit_eval_folder(folder)` reads any
# folder of labelled digit clips:
#
# - labels from a sub-folder name (`zero` .. `nine`, `0` .. `9`, any case, at any depth:
#   `eval/seven/take1.wav`, `eval/speakerA/7/x.wav`) or, failing that, from a file-name
#   prefix (`7_jackson_0.wav`, `seven-01.flac`, `7.wav`);
# - any sample rate (resampled to the models' rate), mono or stereo (channels averaged);
# - unreadable clips are skipped and reported (file and reason), and files whose label
#   cannot be told are listed too, never guessed.
#
# `digit_label_from_text` maps a word or numeral to its digit (used for folder names and
# for what a speech recogniser writes); `digits_named_in` lists every digit a text names.

# %%
import re
from pathlib import Path

import pandas as pd

from lib.core.audio import AUDIO_EXTENSIONS, load_audio_batch
from lib.core.labelled_folders import CLIP_NAME, nohash_speaker
from lib.core.subsets import stratified_subset

DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
# what a speech recogniser may write for a spoken digit (homophones and spellings)
DIGIT_WORD_VARIANTS = {
    "zero": 0,
    "oh": 0,
    "o": 0,
    "nought": 0,
    "naught": 0,
    "one": 1,
    "won": 1,
    "two": 2,
    "to": 2,
    "too": 2,
    "three": 3,
    "tree": 3,
    "four": 4,
    "for": 4,
    "fore": 4,
    "five": 5,
    "six": 6,
    "sicks": 6,
    "seven": 7,
    "eight": 8,
    "ate": 8,
    "nine": 9,
    "nein": 9,
}


def digit_label_from_text(text, loose: bool = False):
    """The digit (int 0-9) a word or numeral names, or None.

    Strict (folder and file names): ``"7"``, ``"seven"``, ``"Seven"``. ``loose=True``
    (recogniser output): the first digit word, homophone (``"to"``, ``"for"``, ``"ate"``)
    or numeral anywhere in the text (``" Seven."``, ``"number 7"``).
    """
    if text is None:
        return None
    value = str(text).strip().lower()
    if value in DIGIT_WORDS:
        return DIGIT_WORDS.index(value)
    if len(value) == 1 and value.isdigit():
        return int(value)
    if not loose:
        return None
    for token in re.findall(r"[a-z]+|\d", value):
        if token.isdigit():
            return int(token)
        if token in DIGIT_WORD_VARIANTS:
            return DIGIT_WORD_VARIANTS[token]
    return None


def digits_named_in(text) -> list:
    """Every digit a recogniser's text names outright (digit words and numerals, in order; homophones such
    as "to" are left out): ``"Two, three, two."`` -> ``[2, 3, 2]``. More than one distinct digit means the
    answer is ambiguous (e.g. Whisper reciting its prompt), whatever the first one is."""
    found = []
    for token in re.findall(r"[a-z]+|\d", str(text or "").lower()):
        if token.isdigit():
            found.append(int(token))
        elif token in DIGIT_WORDS:
            found.append(DIGIT_WORDS.index(token))
    return found


def answers_naming_several_digits(texts) -> int:
    """How many recogniser answers name more than one distinct digit (`digits_named_in`)."""
    return sum(len(set(digits_named_in(text))) > 1 for text in texts)


def digit_label_for_path(path, root=None):
    """Label of one clip: the nearest enclosing folder named as a digit, else the file-name prefix, else None."""
    path = Path(path)
    parents = path.parents if root is None else [p for p in path.parents if Path(root) in p.parents or p == Path(root)]
    for parent in parents:
        if root is not None and parent == Path(root):
            break
        label = digit_label_from_text(parent.name)
        if label is not None:
            return label
    prefix = re.split(r"[_\-. ]", path.stem, maxsplit=1)[0]
    return digit_label_from_text(prefix)


def digit_eval_manifest(folder) -> tuple:
    """``(manifest, unlabelled)``: ``path, label, source, source_from`` rows (``source``: the first sub-folder level
    that tells clips apart, for per-voice, per-speaker or per-session accuracy; where the sub-folders are
    the digits themselves, the speaker in the file name; ``source_from`` says which) for the folder's audio
    files, and the files with no label."""
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise FileNotFoundError(
            f"eval_folder {folder}: no such folder. Give a folder of digit clips, with sub-folders zero..nine "
            "or 0..9, or files named 7_....wav"
        )
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in AUDIO_EXTENSIONS)
    if not files:
        raise FileNotFoundError(f"eval_folder {folder}: no audio files ({', '.join(AUDIO_EXTENSIONS)}) in it")
    rows, unlabelled = [], []
    for path in files:
        label = digit_label_for_path(path, root=folder)
        if label is None:
            unlabelled.append({"path": str(path), "error": "no digit label in its folder names or file-name prefix"})
        else:
            rows.append({"path": str(path), "label": label, "parts": path.parent.relative_to(folder).parts})
    if not rows:
        raise ValueError(
            f"eval_folder {folder}: none of its {len(files)} audio files has a digit label. Put clips in "
            "sub-folders named zero..nine (or 0..9), or name them 7_anything.wav"
        )
    # the source (a voice, a speaker, a session) is the first folder level that tells clips apart:
    # the top-level sub-folder, or below a single shared one (AudioMNIST's data/01, data/02, ...)
    depth = 0
    while len({r["parts"][depth] if len(r["parts"]) > depth else "." for r in rows}) == 1 and any(
        len(r["parts"]) > depth + 1 for r in rows
    ):
        depth += 1
    for row in rows:
        parts = row.pop("parts")
        row["source"] = parts[depth] if len(parts) > depth else "."
        row["source_from"] = "folder"
    # where that level is the digit folders themselves (Speech Commands' zero/, one/, ...) or there is none,
    # the speaker in the file names, when every name carries one
    if all(r["source"] == "." or digit_label_from_text(r["source"]) is not None for r in rows):
        speakers = [_speaker_named(Path(r["path"]).stem, r["label"]) for r in rows]
        if all(speakers) and len(set(speakers)) > 1:
            for row, speaker in zip(rows, speakers):
                row["source"], row["source_from"] = speaker, "file name"
    return pd.DataFrame(rows), unlabelled


def _speaker_named(stem: str, label: int):
    """The speaker in a digit clip's name: Speech Commands' ``{speaker}_nohash_{n}``, or ``{digit}_{speaker}_{take}``
    whose digit is the clip's label (so ``alice_yes_1`` or ``take_01_3`` name no speaker)."""
    match = CLIP_NAME.match(stem)
    return nohash_speaker(stem) or (
        match["speaker"] if match and digit_label_from_text(match["label"]) == label else None
    )


def load_digit_eval_folder(folder, sample_rate: int = 8000, max_clips: int | None = None, seed: int = 0):
    """Load an evaluation folder at ``sample_rate``: ``(waves, manifest, skipped)``.

    ``skipped`` lists every file not used, with the reason (unreadable audio, no label).
    ``max_clips`` takes a label-stratified subset.
    """
    manifest, unlabelled = digit_eval_manifest(folder)
    if max_clips is None and len(manifest) > 3000:  # e.g. all of Speech Commands' digits: say what it costs
        print(
            f"eval_folder: {len(manifest)} labelled clips; every trained model scores all of them (the zero-shot "
            "Whisper at most zero_shot_max_eval_clips). Cap them with max_eval_clips."
        )
    manifest = stratified_subset(manifest, max_clips, seed=seed).reset_index(drop=True)
    waves, ok_paths, failures = load_audio_batch(manifest["path"].tolist(), sr=sample_rate, desc="eval audio")
    ok = set(ok_paths)
    kept = manifest[manifest["path"].isin(ok)].reset_index(drop=True)
    order = {p: i for i, p in enumerate(ok_paths)}
    waves = [waves[order[p]] for p in kept["path"]]
    if unlabelled:
        print(f"eval_folder: {len(unlabelled)} file(s) without a digit label skipped, e.g. {unlabelled[0]['path']}")
    return waves, kept, failures + unlabelled


# %% [markdown]
# ## Eval clips again, at Whisper's rate
#
# The zero-shot row and the encoder model's Whisper prior hear eval clips at 16 kHz, their own
# band, while the trained models read them at the models' rate: `files_above_rate`
# (`lib.core.audio`) says which files hold more than that rate, `load_eval_clips_at` loads chosen
# clips again, in order.


# %%
def load_eval_clips_at(manifest: pd.DataFrame, rows, sample_rate: int) -> list:
    """The clips at positions ``rows`` of an eval manifest, loaded again at ``sample_rate``, in that order.

    They loaded once already (`load_digit_eval_folder`). A clip that no longer loads (changed
    during the run) is reported, with its reason, and is None in its place: nothing shifts against
    its label and the run goes on.
    """
    paths = [str(p) for p in manifest["path"].iloc[list(rows)]]
    waves, ok_paths, failures = load_audio_batch(paths, sr=sample_rate, progress=False)  # reports the failures
    if failures:
        print(f"eval_folder: {len(failures)} clip(s) loaded at the models' rate but not at {sample_rate} Hz now")
    found = dict(zip(ok_paths, waves))
    return [found.get(p) for p in paths]


# %% [markdown]
# ## Speaker-normalisation groups of an eval folder


# %%
def eval_norm_groups(manifest: pd.DataFrame) -> tuple:
    """``(group per clip, how)``: the speaker-normalisation groups of an eval folder's clips, from their ``source``.

    A source is a voice, a speaker or a session (`digit_eval_manifest`), whose clips share a voice
    and a microphone. Where the sources are the digit folders themselves (``seven/`` beside
    ``numerals/``: the names say so, no label is read), grouping by them would normalise a digit's
    sound away, so the whole folder is one group, as it is when it names no sources.
    """
    sources = manifest["source"].astype(str)
    if sources.nunique() < 2 or sources.map(lambda v: digit_label_from_text(v) is not None).any():
        why = "names no sources" if sources.nunique() < 2 else "its sources are digit folders"
        return ["the folder"] * len(manifest), f"the whole folder as one group ({why})"
    named_by = "file names" if (manifest["source_from"] == "file name").all() else "sub-folders"
    return sources.tolist(), f"its source ({sources.nunique()}, named by the {named_by})"
