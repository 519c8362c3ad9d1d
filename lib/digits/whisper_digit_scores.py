# %% [markdown]
# # Whisper's own decoder as a digit prior: forced choice over the ten digit words
#
# Whisper's decoder already knows how the ten digit words sound. Instead of letting it write
# free text (the zero-shot row), `WhisperDigitScorer` asks it one question per clip: after the
# prefix `<|startofprev|> zero one two ... nine <|startoftranscript|><|notimestamps|>`, how
# likely is each digit as the first word? A digit's score is the log-sum-exp of the
# log-probabilities of its spellings (" seven", " Seven", "seven", "Seven", " 7", "7"; "oh"
# counts for zero); a spelling of several tokens scores the sum of its tokens' log-probabilities
# (teacher-forced). The result is ten "Whisper digit scores" per clip, with no training.
#
# The decoder reads the encoder's final states (after its last layer norm). In the digit
# model's clip mode these are the frames of the forward the head already uses (the final layer
# among `layers`), so the prior costs one short decoder pass (about 10 ms per clip on one CPU
# thread). Nothing is trained: on all 3,000 FSDD clips forced choice alone scores 0.968 (worst
# speaker 0.904) and 0.927 on 300 espeak-ng clips; the prompt that lists the digits matters (no
# prompt: 0.93 / 0.83 with the 1.5 s window's states). The 30 s padded encoder is 20x slower
# and was not better (0.93 on 60 FSDD clips).
#
# `fuse_digit_prior` adds it to a trained head: `log_softmax(head) + weight * log_softmax(whisper)`
# (`fuse_digit_prior_by_speaker`: each speaker with its LOSO fold's weight); `pick_digit_prior_weight`
# fits the weight on held-out logits (log loss); `digit_prior_scores` puts the scores in label order.

# %%
import numpy as np
import torch
from scipy.special import log_softmax

from lib.core.bundled_whisper import BUNDLED_WHISPER_ID, bundled_whisper_folder
from lib.core.speech_models import resolve_speech_model_id
from lib.core.subsets import speaker_folds
from lib.digits.classifier_eval import loso_from_predictions
from lib.digits.digit_folders import DIGIT_WORDS, digit_label_from_text

WHISPER_DIGIT_PROMPT = " ".join(DIGIT_WORDS)
WHISPER_DIGIT_WORDS = (("zero", "oh"), *((word,) for word in DIGIT_WORDS[1:]))  # the spoken forms of each digit
DIGIT_PRIOR_DEFAULT_WEIGHT = 0.25  # fitted on FSDD leave-one-speaker-out logits (0.18-0.46 per fold)


def load_whisper_digit_tokenizer(model: str, local_files_only: bool = True):
    """The tokenizer of a Whisper model: ``BUNDLED_WHISPER_ID`` (its converted folder), a hub id or a folder."""
    import transformers

    name = resolve_speech_model_id(str(model))
    source = str(bundled_whisper_folder()) if name == BUNDLED_WHISPER_ID else name
    return transformers.WhisperTokenizer.from_pretrained(source, local_files_only=local_files_only)


def whisper_digit_spellings(tokenizer, words=WHISPER_DIGIT_WORDS, numerals: bool = True) -> list:
    """Per digit, the token-id tuples of its spellings (with and without a leading space, capitalised)."""
    spellings = []
    for digit, forms in enumerate(words):
        texts = [v for form in forms for v in (f" {form}", f" {form.capitalize()}", form, form.capitalize())]
        texts += [f" {digit}", f"{digit}"] if numerals else []
        found = []
        for text in texts:
            ids = tuple(int(t) for t in tokenizer.encode(text, add_special_tokens=False))
            if ids and ids not in found:
                found.append(ids)
        if not found:
            raise ValueError(f"the tokenizer has no spelling of digit {digit} ({forms})")
        spellings.append(found)
    return spellings


# %% [markdown]
# ## The scorer


# %%
class WhisperDigitScorer:
    """Ten digit log-probabilities per clip from Whisper's decoder (forced choice, no training).

    ``model``: a transformers ``WhisperModel`` or ``WhisperForConditionalGeneration`` (e.g. a
    speech adapter's ``.model``); ``tokenizer``: its ``WhisperTokenizer``; ``prompt``: previous
    text that lists the digits (``None``: no prompt).
    """

    def __init__(self, model, tokenizer, prompt: str | None = WHISPER_DIGIT_PROMPT, batch_size: int = 64):
        base = model.model if hasattr(model, "proj_out") else model
        self.decoder = base.decoder
        self.output_weight = model.proj_out.weight if hasattr(model, "proj_out") else self.decoder.embed_tokens.weight
        self.prompt, self.batch_size = prompt, int(batch_size)

        def special(name: str):
            token = tokenizer.convert_tokens_to_ids(name)
            if token is None or token == tokenizer.unk_token_id:
                raise ValueError(f"the tokenizer has no Whisper special token {name}")
            return int(token)

        prefix = [special("<|startoftranscript|>")]
        if model.config.vocab_size > 51864:  # multilingual Whisper: English, transcribe
            prefix += [special("<|en|>"), special("<|transcribe|>")]
        prefix += [special("<|notimestamps|>")]
        if prompt:
            prompt_ids = tokenizer.encode(" " + prompt.strip(), add_special_tokens=False)
            prefix = [special("<|startofprev|>"), *prompt_ids, *prefix]
        self.prefix = prefix
        self.spellings = whisper_digit_spellings(tokenizer)
        longest = len(prefix) + max(len(s) for forms in self.spellings for s in forms)
        if longest > model.config.max_target_positions:
            raise ValueError(
                f"prompt too long: {longest} tokens, the decoder takes {model.config.max_target_positions}"
            )
        # single-token spellings are read from the prefix pass; longer ones need their own rows
        self._single = [[s[0] for s in forms if len(s) == 1] for forms in self.spellings]
        self._multi = [(d, s) for d, forms in enumerate(self.spellings) for s in forms if len(s) > 1]

    def info(self) -> dict:
        return {
            "prompt": self.prompt,
            "prefix_tokens": len(self.prefix),
            "spellings_per_digit": [len(forms) for forms in self.spellings],
            "multi_token_spellings": len(self._multi),
        }

    @torch.inference_mode()
    def _group_log_probs(self, states: torch.Tensor) -> torch.Tensor:
        """``[B, T, D]`` encoder states of clips of one length -> ``[B, 10]`` digit log-probs."""
        n, p = states.shape[0], len(self.prefix)
        ids = torch.tensor(self.prefix, device=states.device)[None].expand(n, -1)
        hidden = self.decoder(input_ids=ids, encoder_hidden_states=states).last_hidden_state[:, -1]
        log_probs = torch.log_softmax(hidden @ self.output_weight.T, dim=-1)
        parts = [[log_probs[:, forms]] if forms else [] for forms in self._single]
        if self._multi:  # teacher-forced: prefix + spelling, right-padded (causal: padding never looks back)
            width = max(len(s) for _, s in self._multi)
            rows = torch.tensor([list(self.prefix) + list(s) + [s[-1]] * (width - len(s)) for _, s in self._multi])
            m = len(self._multi)
            hidden = self.decoder(
                input_ids=rows.repeat(n, 1).to(states.device),
                encoder_hidden_states=states.repeat_interleave(m, dim=0),
            ).last_hidden_state
            log_probs = torch.log_softmax(hidden @ self.output_weight.T, dim=-1).reshape(n, m, p + width, -1)
            for k, (digit, spelling) in enumerate(self._multi):
                steps = [log_probs[:, k, p - 1 + j, token] for j, token in enumerate(spelling)]
                parts[digit].append(torch.stack(steps, 1).sum(1, keepdim=True))
        return torch.stack([torch.logsumexp(torch.cat(v, dim=1), dim=1) for v in parts], dim=1)

    def log_probs(self, encoder_states) -> np.ndarray:
        """``(n, 10)`` log-probabilities (over the vocabulary) of each digit as the first word.

        ``encoder_states``: one ``[frames, dims]`` array per clip: the encoder's final states
        (after its last layer norm). Clips with the same number of frames share a decoder pass
        (Whisper's cross-attention takes no mask, so clips are never padded).
        """
        states = [np.asarray(s, dtype=np.float32) for s in encoder_states]
        out = np.zeros((len(states), len(self.spellings)), dtype=np.float32)
        lengths = np.array([len(s) for s in states])
        device = self.output_weight.device
        for length in np.unique(lengths):
            same = np.flatnonzero(lengths == length)
            for first in range(0, len(same), self.batch_size):
                items = same[first : first + self.batch_size]
                batch = torch.from_numpy(np.stack([states[i] for i in items])).to(device, self.output_weight.dtype)
                out[items] = self._group_log_probs(batch).float().cpu().numpy()
        return out


# %% [markdown]
# ## Fusing the prior with a trained head


# %%
def digit_prior_columns(labels) -> list | None:
    """For each model label, its digit (the column of the Whisper scores); ``None`` if a label is not a digit.

    Labels may be ints 0-9, digit strings or the words zero..nine (any order).
    """
    columns = [digit_label_from_text(label) for label in labels]
    return None if None in columns else columns


def _digit_log_softmax(x) -> np.ndarray:
    return log_softmax(np.asarray(x, dtype=np.float64), axis=1)


def fuse_digit_prior(head_logits, whisper_log_probs, weight: float) -> np.ndarray:
    """``log_softmax(head) + weight * log_softmax(whisper)`` (both over the ten digits), float32."""
    head = _digit_log_softmax(head_logits)
    if not weight:
        return head.astype(np.float32)
    return (head + float(weight) * _digit_log_softmax(whisper_log_probs)).astype(np.float32)


def fuse_digit_prior_by_speaker(head_logits, whisper_log_probs, speakers, weights) -> np.ndarray:
    """`fuse_digit_prior` with each speaker's own weight (``weights``: speaker -> weight, e.g. each LOSO
    fold's); a speaker without one keeps the head's log-softmax."""
    head_logits, whisper_log_probs = np.asarray(head_logits), np.asarray(whisper_log_probs)
    fused = _digit_log_softmax(head_logits).astype(np.float32)
    speakers = np.asarray(speakers).astype(str)
    for speaker, weight in weights.items():
        rows = speakers == str(speaker)
        fused[rows] = fuse_digit_prior(head_logits[rows], whisper_log_probs[rows], weight)
    return fused


def digit_prior_scores(scorer, final_states, labels) -> np.ndarray:
    """``(n, labels)`` Whisper digit log-probabilities of encoder final states, in the order of ``labels``."""
    columns = digit_prior_columns(labels)
    if columns is None:
        raise ValueError(f"whisper_prior needs digit labels (0-9 or zero..nine), not {list(labels)}")
    return scorer.log_probs(final_states)[:, columns]


def pick_digit_prior_weight(head_logits, whisper_log_probs, targets) -> dict:
    """The prior's weight, fitted on held-out clips: ``{"weight", "head_scale", "prior_scale", ...}``.

    Fits ``a * log_softmax(head) + b * log_softmax(whisper)`` by log loss (two scales: the head
    is trained with label smoothing, so its own scale is fitted too, else the loss would ask the
    prior to sharpen the head rather than to correct it); the weight is ``b / a``, the only part
    that changes a decision. ``targets``: class indices (0..9) of the held-out clips.
    """
    from scipy.optimize import minimize

    targets = np.asarray(targets, dtype=int)
    if len(targets) == 0:
        raise ValueError("no held-out clips to pick the prior weight on")
    head, prior = _digit_log_softmax(head_logits), _digit_log_softmax(whisper_log_probs)
    rows = np.arange(len(targets))

    def log_loss(scales) -> float:
        return float(-_digit_log_softmax(scales[0] * head + scales[1] * prior)[rows, targets].mean())

    fit = minimize(log_loss, x0=np.array([1.0, 0.5]), method="Nelder-Mead", options={"xatol": 1e-4, "fatol": 1e-7})
    a, b = (float(v) for v in fit.x)
    weight = max(0.0, b / a) if a > 0 else 0.0
    return {
        "weight": weight,
        "head_scale": a,
        "prior_scale": b,
        "log_loss": float(fit.fun),
        "head_log_loss": log_loss([1.0, 0.0]),
        "accuracy": float(np.mean(fuse_digit_prior(head, prior, weight).argmax(1) == targets)),
        "head_accuracy": float(np.mean(head.argmax(1) == targets)),
        "n": int(len(targets)),
    }


# %%
def digit_prior_loso(
    head_logits, whisper_log_probs, targets, speakers, weight: float | None = None, folds=None
) -> dict:
    """Leave-one-speaker-out accuracy of the fused scores, from the folds' held-out head logits.

    ``head_logits[i]``: clip ``i``'s logits from the head trained without its speaker. With
    ``weight=None`` each fold's weight is fitted (`pick_digit_prior_weight`) on the *other*
    speakers' held-out logits, never on the held-out speaker's own clips; ``weights`` records
    them. Same keys as ``leave_one_speaker_out`` (per-speaker, mean, std, min, pooled; ``predictions``:
    the fused class index of every clip). ``folds``: the speakers held out together (its ``fold_speakers``,
    when it grouped them); None: one speaker per fold.
    """
    head_logits, whisper_log_probs = np.asarray(head_logits), np.asarray(whisper_log_probs)
    targets, speakers = np.asarray(targets, dtype=int), np.asarray(speakers)
    weights = {}
    speakers = speakers.astype(str)
    for held_out in speaker_folds(speakers) if folds is None else folds:
        test = np.isin(speakers, [str(s) for s in held_out])
        w = weight
        if w is None:
            w = pick_digit_prior_weight(head_logits[~test], whisper_log_probs[~test], targets[~test])["weight"]
        weights.update(dict.fromkeys(map(str, held_out), float(w)))
    predictions = fuse_digit_prior_by_speaker(head_logits, whisper_log_probs, speakers, weights).argmax(1)
    return {
        **loso_from_predictions(targets, predictions, speakers),
        "weights": weights,
        "weight_source": "fixed" if weight is not None else "fitted per fold on the other speakers' held-out logits",
        "predictions": predictions,
    }
