"""A cross-dataset evaluation folder built from real FSDD clips, for the eval_folder tests.

16 kHz (resampled from 8 kHz), one sub-folder per digit word (`zero` .. `nine`), one clip
stored as stereo, one clip in a numeral folder, one named by prefix only, one corrupt file
and one file without any label.
"""

from __future__ import annotations

from pathlib import Path

import librosa
import numpy as np
import soundfile as sf

WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]


def build_digit_eval_folder(fsdd_manifest, root: Path, per_digit: int = 3, speaker: str | None = None) -> dict:
    """Write the folder under ``root``; return ``{"folder", "labels": {path: digit}, "corrupt", "unlabelled"}``."""
    root = Path(root)
    test = fsdd_manifest[fsdd_manifest.split == "test"]
    if speaker is not None:
        test = test[test.speaker == speaker]
    labels = {}
    for digit, word in enumerate(WORDS):
        rows = test[test.label == digit].sort_values(["speaker", "index"]).iloc[:: max(1, len(test) // 300)]
        for k, path in enumerate(rows.path.iloc[:per_digit]):
            y, _ = librosa.load(path, sr=16000)
            if digit == 3 and k == 0:  # a numeral folder
                target = root / "numerals" / "3" / f"take{k}.wav"
            elif digit == 5 and k == 0:  # labelled by its file-name prefix only
                target = root / "loose" / f"5_{Path(path).stem}.flac"
            else:
                target = root / word / f"{Path(path).stem}.wav"
            target.parent.mkdir(parents=True, exist_ok=True)
            if digit == 7 and k == 0:  # stereo, 0.8 and 0.6 of the signal on the two channels
                sf.write(target, np.stack([0.8 * y, 0.6 * y], axis=1), 16000, subtype="PCM_16")
            else:
                sf.write(target, y, 16000, subtype="PCM_16")
            labels[str(target)] = digit
    corrupt = root / "nine" / "broken.wav"
    corrupt.write_bytes(b"RIFF\x24\x00\x00\x00WAVEfmt not really audio")
    unlabelled = root / "misc" / "hello.wav"
    unlabelled.parent.mkdir(parents=True, exist_ok=True)
    sf.write(unlabelled, np.zeros(1600, dtype=np.float32), 16000)
    return {"folder": root, "labels": labels, "corrupt": str(corrupt), "unlabelled": str(unlabelled)}
