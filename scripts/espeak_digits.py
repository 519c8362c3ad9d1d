"""Build a synthetic cross-dataset digit set with espeak-ng: several voices, rates and pitches, 16 kHz,
1-second clips with silence around the word and added noise.

A self-check for the digit notebook's ``eval_folder`` when no recorded digits from elsewhere are at hand
(the real check is recorded speech: other speakers, microphones and rooms). Needs the ``espeak-ng``
program (Debian/Ubuntu: ``apt-get install espeak-ng``). Never commit the output.

    python -m scripts.espeak_digits /tmp/espeak-digits --voices 30 --seed 0
    audiolens run digit_classification -p eval_folder /tmp/espeak-digits
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np

WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
BASE_VOICES = ["en-us", "en-gb", "en-gb-scotland", "en-gb-x-rp", "en-gb-x-gbclan", "en-gb-x-gbcwmd", "en-029"]
VARIANTS = ["m1", "m2", "m3", "m4", "m5", "m6", "m7", "f1", "f2", "f3", "f4", "f5", "klatt", "klatt2", "klatt3"]
# women's voices the self-check above never uses: a development set for choices about voices unlike FSDD's six men
FEMALE_DEV_VARIANTS = ["Alicia", "Andrea", "Annie", "aunty", "belinda", "linda", "steph", "steph2", "steph3", "anika"]
VARIANT_SETS = {"self-check": VARIANTS, "female-dev": FEMALE_DEV_VARIANTS}


def espeak_digits(
    out_dir, n_voices: int = 30, seed: int = 0, snr_db=(10.0, 30.0), clip_seconds: float = 1.0, variants=VARIANTS
):
    """Write ``out_dir/<voice>/<word>/<word>_<voice>.wav``; return the number of clips written.

    ``variants``: the espeak-ng voice variants drawn from (``VARIANTS``: the self-check's;
    ``FEMALE_DEV_VARIANTS``: women's voices the self-check does not use)."""
    import librosa
    import soundfile as sf

    exe = shutil.which("espeak-ng")
    if exe is None:
        raise SystemExit("espeak-ng is not installed: apt-get install espeak-ng")
    rng = np.random.default_rng(seed)
    out_dir = Path(out_dir)
    count = 0
    with tempfile.TemporaryDirectory() as tmp:
        for v in range(n_voices):
            voice = f"{BASE_VOICES[v % len(BASE_VOICES)]}+{variants[int(rng.integers(len(variants)))]}"
            rate, pitch = int(rng.integers(110, 200)), int(rng.integers(15, 85))
            name = f"v{v:02d}-{voice.replace('+', '-')}-s{rate}-p{pitch}"
            for word in WORDS:
                raw = Path(tmp) / "word.wav"
                subprocess.run([exe, "-v", voice, "-s", str(rate), "-p", str(pitch), "-w", str(raw), word], check=True)
                y, _ = librosa.load(raw, sr=16000)
                y, _ = librosa.effects.trim(y, top_db=40)
                y = y[: int(0.9 * clip_seconds * 16000)]
                clip = np.zeros(int(clip_seconds * 16000), dtype=np.float32)
                start = int(rng.integers(0, len(clip) - len(y) + 1))
                clip[start : start + len(y)] = y * rng.uniform(0.1, 0.6) / (np.abs(y).max() + 1e-9)
                power = np.mean(clip[start : start + len(y)] ** 2)
                snr = rng.uniform(*snr_db)
                clip += rng.normal(0, np.sqrt(power / 10 ** (snr / 10)), len(clip)).astype(np.float32)
                target = out_dir / name / word / f"{word}_{name}.wav"
                target.parent.mkdir(parents=True, exist_ok=True)
                sf.write(target, np.clip(clip, -1, 1), 16000, subtype="PCM_16")
                count += 1
    return count


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out_dir")
    parser.add_argument("--voices", type=int, default=30)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--variants", choices=sorted(VARIANT_SETS), default="self-check", help="which espeak-ng voice variants"
    )
    args = parser.parse_args(argv)
    count = espeak_digits(args.out_dir, args.voices, args.seed, variants=VARIANT_SETS[args.variants])
    print(f"{count} clips written to {args.out_dir}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
