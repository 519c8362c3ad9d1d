# %% [markdown]
# # Spoken digits that hold up on new voices and new recordings
#
# A digit recogniser is only as good as its accuracy on a voice and a microphone it has never
# heard. The Free Spoken Digit Dataset (3,000 clips, 6 speakers, 8 kHz) has the same six
# speakers in its official train and test sets, so its official accuracy mostly measures how
# well a model knows those six voices. This notebook makes the honest numbers the headline:
#
# 1. **Leave one speaker out (LOSO)** for every model: train on five speakers, test on the
#    sixth, for each speaker; per-speaker accuracy, mean and minimum. The official split is
#    kept as a secondary row, labelled *speaker-overlapping*.
# 2. **Cross-dataset** (`eval_folder`): any folder of digit clips recorded elsewhere
#    (sub-folders `zero`..`nine` or `0`..`9`, or files named `7_....wav`; any rate, mono or
#    stereo); every model is scored on it.
# 3. **The bar to beat**: a zero-shot Whisper tiny.en (the real bundled model, offline) with a
#    prompt listing the digits, scored on the same held-out speakers and the same folder.
#
# The models: a **pretrained-encoder classifier** (frozen Whisper tiny.en encoder frames,
# attentive statistics pooling, a small head), and two from-scratch models made
# speaker-robust: **MFCC + SVM** (grid search) and a **CNN** (SpecAugment), both trained on
# augmented copies of every clip (speed/VTLP-like perturbation, noise, synthetic rooms, gain,
# padding) and **normalised per speaker** (each speaker's features centred and scaled with
# the statistics of their own unlabelled clips, Kaldi's per-speaker CMVN). **Wav2Vec2** fine-tuning runs where
# its checkpoint loads (GPU recommended). Then latency, saved models, and live use: a VAD
# recogniser in toggle, push-to-talk and continuous (sliding-window) modes, scored on a
# realistic stream with background speech, level changes and pauses.

# %% tags=["parameters"]
data_path = None  # [path] FSDD folder; None: $AUDIOLENS_DATA, data/, then download
custom_folder = None  # [path] a folder of {label}_{speaker}_{index}.wav clips (or label sub-folders) instead of FSDD
labels_csv = None  # [path] with custom_folder: a CSV with filename,label[,speaker,split] columns
eval_folder = None  # [path] digit clips recorded elsewhere (sub-folders zero..nine / 0..9, or 7_x.wav): scored
output_dir = "runs/digit_classification/latest"  # results.json, figures and models go here
seed = 0  # [int 0..] random seed
models = ["svm", "cnn", "encoder", "wav2vec2"]  # [each svm|cnn|encoder|wav2vec2] models to train
max_train_clips = None  # [int 1..] cap on official-split training clips, stratified (None: all 2,700)
max_test_clips = None  # [int 1..] cap on official-split test clips, stratified (None: all 300)
max_loso_clips = None  # [int 1..] cap on the leave-one-speaker-out clips, stratified by speaker and label (None: all)
max_eval_clips = None  # [int 1..] cap on eval_folder clips, stratified by label (None: all)
sample_rate = 8000  # [int 4000..48000] Hz every model works at (FSDD is 8 kHz; eval_folder clips are resampled to it)
augment_copies = 2  # [int 0..] augmented copies of every training clip (speed, noise, room, gain, padding); 0 for none
augment_background = True  # real background noise in the copies: LibriSpeech speech (when found) as babble
n_mfcc = 13  # [int 2..] SVM: MFCCs per frame (the low ones: the higher ones carry voice and pitch detail)
delta_order = 1  # [0|1|2] 0: MFCC, 1: + deltas, 2: + delta-deltas
n_frames = 12  # [int 1..] SVM: segments pooling, equal time segments per clip; flat, frames kept (16 ms hop)
pooling = "segments"  # [flat|segments|mean|max|mean+std] how frames become one vector for the SVM
mfcc_cmvn = "speaker"  # [speaker|mean|mean+var|none] SVM's MFCCs normalised over each speaker's clips, or per clip
svm_vtlp = [0.9, 1.1]  # [each 0.5..2] SVM: extra training vectors of every clip, spectrum warped (VTLP); [] none
mfcc_fmin = 0  # [0..4000] SVM: lowest mel-filter frequency in Hz (100 helps FSDD LOSO, hurts other corpora)
classifier = "svm"  # [svm|logreg] baseline classifier
pca_components = 128  # [int 1..] PCA size in the baseline pipeline (capped at a CV fold's training clips)
c_grid = [0.5, 1.0, 2.0, 4.0, 8.0]  # [each 0.000001..] grid of C values
gamma_grid = ["scale", "auto", 0.01, 0.05, 0.1]  # grid of RBF gamma values (SVM only)
cv_folds = 5  # [int 2..] stratified K-fold for the grid search
loso_svm_grid = False  # [bool] SVM LOSO: repeat the grid search in every fold on its training speakers only (nested)
cnn_features = "mfcc"  # [mfcc|logmel] CNN input features
cnn_n_mfcc = 20  # [int 2..] CNN: MFCCs per frame
cnn_time_steps = 32  # [optional int 1..] CNN: the clip's frames resampled to this many (time normalisation)
cnn_epochs = 25  # [int 1..] maximum CNN epochs (early stopping may end it sooner)
cnn_patience = 6  # [int 1..] epochs without validation improvement before stopping
cnn_batch_size = 64  # [int 1..] CNN batch size
cnn_lr_grid = [0.002]  # [each 0.000001..1] CNN learning rates tried (best on validation; LOSO folds reuse it)
cnn_cmvn = "speaker"  # [speaker|True|False] CNN features normalised over each speaker's clips; True: per clip
cnn_test_warps = [0.9, 1.0, 1.1]  # [each 0.5..2] CNN: softmax averaged over the clip's spectrum warped by each; [] off
loso_models = ["svm", "cnn", "encoder", "wav2vec2", "zero_shot"]  # [each svm|cnn|encoder|wav2vec2|zero_shot] [] to skip
loso_cnn_epochs = 20  # [int 1..] CNN epochs per leave-one-speaker-out fold
loso_max_folds = 10  # [int 2..] more speakers than this (AudioMNIST, Speech Commands): held out in this many groups
encoder_model = "bundled/whisper-tiny.en"  # pretrained encoder: the bundled Whisper tiny.en, a hub id or a folder
encoder_whisper_mode = "clip"  # [clip|padded] clip: positions cut to the clip (fast); padded: the 30 s reference
encoder_layers = [2, 3, 4]  # encoder layers the head mixes (Whisper tiny.en: conv, 0-4); see the per-layer curve
encoder_pooling = "attention"  # [mean|mean+std|attention] how frames become one vector
encoder_window_seconds = 1.5  # [0.5..30] clip mode: the clip starts a window of silence this long
encoder_trim_db = 50.0  # [optional 0..] clip edges this far below its peak are cut before the encoder; None keeps all
encoder_crop_prob = 0.3  # [0..1] encoder head: chance an augmented copy keeps only the first 0.2-0.45 s of the word
encoder_voice_prob = 0.0  # [0..1] encoder head: chance a non-crop copy is re-voiced (pitch 1.3-2x, formants 1.05-1.25x)
encoder_combine = "mix"  # [mix|concat] several layers: learned softmax mix, or side by side
encoder_epochs = 20  # [int 1..] head training epochs
encoder_frame_mask_prob = 0.25  # [0..0.9] head training: fraction of encoder frames masked (time masks)
encoder_label_smoothing = 0.2  # [0..0.9] head training: label smoothing of the cross-entropy
encoder_cache_dir = None  # [str] per-clip encoder features cache (None: ~/.cache/audiolens/digit-encoder)
encoder_layer_curve = True  # score every encoder layer alone by leave-one-speaker-out
encoder_whisper_prior = True  # fuse Whisper's own decoder scores of the ten digit words (forced choice) with the head
encoder_prior_weight = None  # [optional 0..] weight of the Whisper digit scores; None: fitted on held-out speakers
encoder_prior_wideband = True  # the Whisper prior hears eval clips at 16 kHz (their own band); False: sample_rate's
encoder_finetune_top = False  # also fine-tune a copy of the encoder's top block on the cached frames (5x slower)
encoder_speaker_norm = "mean"  # [mean|mean+var|none] encoder head: each speaker's frame mean subtracted (+ std divided)
speaker_norm_prior_clips = 5.0  # [0..] speaker normalisation: a speaker with n clips weighs n/(n+this) vs training
zero_shot_max_clips = 120  # [int 1..] FSDD clips scored by the zero-shot Whisper, stratified by speaker and label
zero_shot_compute_type = "int8"  # [int8|float32] CTranslate2 precision of the zero-shot Whisper
zero_shot_max_eval_clips = 1000  # [optional int 1..] eval_folder clips the zero-shot scores (0.3 s each); None: all
wav2vec2_model = "facebook/wav2vec2-base"  # hub id or local save_pretrained folder
wav2vec2_epochs = 3  # [int 1..] fine-tuning epochs
wav2vec2_freeze_feature_encoder = True  # freeze the convolutional feature encoder
wav2vec2_lr_grid = [3e-5]  # [each 0.0000001..1] learning rates tried (best on validation)
wav2vec2_noise_prob = 0.3  # [0..1] chance a training clip gets noise at 10-30 dB SNR
wav2vec2_batch_size = 16  # [int 1..] clips per step
wav2vec2_max_steps = None  # [int 1..] cap on optimiser steps (None: all epochs)
wav2vec2_on_cpu = False  # also fine-tune without a GPU (slow: the base model has 95 M parameters)
device = "auto"  # [auto|cpu|cuda|mps] where the models run
cpu_threads = None  # [int 1..] CPU threads for torch and BLAS (None: the libraries' default; 1 on a shared, busy CPU)
latency_runs = 30  # [int 1..] warm runs per model for the latency figures
live_model = "best"  # [best|svm|cnn|encoder|wav2vec2] model for streaming and the microphone (best: highest LOSO mean)
stream_digits = [4, 0, 7, 2, 9]  # digits of the demo recording played through the streaming recogniser
stream_test_digits = 30  # [int 1..] digits in the realistic test stream (background speech, level changes, pauses)
vad_threshold_rms = 0.02  # [0.0001..1] VAD: a speech frame's RMS is above this
vad_min_speech_ms = 400  # [0..] VAD: shortest segment kept (pre-roll + speech + hangover)
vad_hangover_ms = 175  # [0..] VAD: silence that ends a segment
stream_window_ms = 800  # [int 100..] continuous mode: sliding window length
stream_hop_ms = 100  # [int 10..] continuous mode: window hop
confidence_threshold = 0.6  # [0..1] live: emit when the top probability reaches this
temperature = 1.0  # [0.01..] live: softmax temperature
force_emit = True  # live: emit low-confidence segments too, flagged "forced"

# %%
import time
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
from IPython.display import display
from sklearn.base import clone
from sklearn.model_selection import train_test_split

from lib.core.accuracy import paired_comparison
from lib.core.atomic_io import atomic_write_text, json_plain
from lib.core.audio import WHISPER_SAMPLE_RATE, files_above_rate
from lib.core.datasets import load_fsdd, load_librispeech
from lib.core.labelled_folders import load_labelled_folder
from lib.core.outputs import Stopwatch, prepare_output_dir, save_figure, update_results
from lib.core.runtime import limit_cpu_threads, pick_device, seed_everything
from lib.core.subsets import stratified_subset
from lib.digits.classifier_eval import (
    classification_summary,
    hardest_speakers,
    held_out_scores,
    leave_one_speaker_out,
    loso_from_predictions,
    measure_latency,
    plot_confusion,
    plot_leave_one_speaker_out,
)
from lib.digits.digit_augment import DigitAugmentConfig, digit_augmented_copies, digit_copy_plan
from lib.digits.digit_features import (
    DigitFeatureConfig,
    digit_feature_vectors,
    digit_mfcc_moments,
    load_digit_waves,
    norm_prior_from_moments,
)
from lib.digits.digit_folders import (
    answers_naming_several_digits,
    eval_norm_groups,
    load_digit_eval_folder,
    load_eval_clips_at,
)
from lib.digits.digit_models import (
    DigitCnnConfig,
    SklearnDigitModel,
    grid_search_digit_pipeline,
    train_digit_cnn,
    train_digit_cnn_lr_grid,
)
from lib.digits.encoder_digits import (
    DigitEncoderConfig,
    EncoderDigitModel,
    digit_encoder_features,
    digit_encoder_layer_curve,
    digit_final_layer_position,
    encoder_norm_prior,
    load_digit_encoder_adapter,
    load_digit_prior_scorer,
    speaker_normalised_frames,
    train_digit_encoder_head,
)
from lib.digits.encoder_finetune import digit_top_block, digit_top_positions
from lib.digits.live_digits import (
    StreamingDigitRecognizer,
    VadConfig,
    digit_test_stream,
    live_digit_widget,
    score_digit_stream,
    stream_audio_file,
)
from lib.digits.model_files import (
    load_digit_model,
    predict_audio_files,
    save_cnn_digit_model,
    save_encoder_digit_model,
    save_sklearn_digit_model,
    save_wav2vec2_digit_model,
)
from lib.digits.wav2vec2_finetune import (
    Wav2Vec2Unavailable,
    finetune_wav2vec2,
    finetune_wav2vec2_lr_grid,
    load_wav2vec2_classifier,
)
from lib.digits.whisper_digit_scores import (
    DIGIT_PRIOR_DEFAULT_WEIGHT,
    digit_prior_columns,
    digit_prior_loso,
    digit_prior_scores,
    fuse_digit_prior_by_speaker,
    pick_digit_prior_weight,
)
from lib.digits.zero_shot_digits import WhisperZeroShotDigits, ZeroShotDigitsUnavailable

seed_everything(seed)
limit_cpu_threads(cpu_threads)
out = prepare_output_dir(output_dir)
models_dir = prepare_output_dir(out / "models")
device = pick_device(device)
print(f"device: {device}, torch threads: {torch.get_num_threads()}")
notebook_start = time.perf_counter()
timings = {}

# %% [markdown]
# ## Data
#
# The official FSDD split puts takes 0-4 of every digit and speaker in test (300 clips) and
# takes 5-49 in train (2,700). Leave-one-speaker-out uses every clip (`max_loso_clips` draws a
# subset stratified by speaker and digit). A custom folder without a split gets a stratified
# 10% test split. `eval_folder` is loaded at the same sample rate; unreadable or unlabelled
# files there are skipped and listed.

# %%
with Stopwatch() as data_time:
    if custom_folder:
        manifest = load_labelled_folder(custom_folder, labels_csv=labels_csv)
        dataset_name = str(custom_folder)
        if manifest["label"].astype(str).str.fullmatch(r"\d").all():  # "0".."9" from names: the digits, as FSDD's
            manifest["label"] = manifest["label"].astype(int)
    else:
        manifest = load_fsdd(data_path)
        dataset_name = "fsdd"
    if "split" in manifest.columns and manifest["split"].nunique() < 2:  # e.g. every take numbered 0-4: all "test"
        print(f"the folder's split puts every clip in {manifest['split'].iloc[0]!r}: a stratified split instead")
        manifest = manifest.drop(columns="split")
    if "split" not in manifest.columns:
        n_classes = manifest["label"].nunique()
        tr_idx, te_idx = train_test_split(
            np.arange(len(manifest)),
            test_size=max(0.1, 1.5 * n_classes / len(manifest)),
            random_state=seed,
            stratify=manifest["label"],
        )
        manifest["split"] = "train"
        manifest.loc[te_idx, "split"] = "test"
    has_speakers = "speaker" in manifest.columns and manifest["speaker"].nunique() > 1
    strata = ["label", "speaker"] if has_speakers else ["label"]
    train_manifest = stratified_subset(manifest[manifest.split == "train"], max_train_clips, seed, strata)
    test_manifest = stratified_subset(manifest[manifest.split == "test"], max_test_clips, seed, strata)
    loso_manifest = stratified_subset(manifest, max_loso_clips, seed, strata) if has_speakers else manifest.iloc[:0]
    # every clip is loaded once; the official split and the LOSO folds index into it
    wanted = pd.concat([train_manifest, test_manifest, loso_manifest]).drop_duplicates("path")
    all_waves_list, all_manifest, load_failures = load_digit_waves(wanted, sample_rate, desc="audio")
    wave_of = dict(zip(all_manifest["path"], all_waves_list))
    train_manifest = train_manifest[train_manifest.path.isin(wave_of)].reset_index(drop=True)
    test_manifest = test_manifest[test_manifest.path.isin(wave_of)].reset_index(drop=True)
    loso_manifest = loso_manifest[loso_manifest.path.isin(wave_of)].reset_index(drop=True)
    train_waves = [wave_of[p] for p in train_manifest.path]
    test_waves = [wave_of[p] for p in test_manifest.path]
    # speaker normalisation: a clip's group is its speaker (unknown: the clip alone); eval clips: their source
    group_of = dict(zip(all_manifest["path"], all_manifest["speaker"] if has_speakers else all_manifest["path"]))
    labels = sorted(manifest["label"].unique().tolist())
    y_train = train_manifest["label"].to_numpy()
    y_test = test_manifest["label"].to_numpy()
    eval_waves, eval_manifest, eval_skipped, eval_groups, eval_groups_how = [], None, [], [], None
    if eval_folder:
        eval_waves, eval_manifest, eval_skipped = load_digit_eval_folder(
            eval_folder, sample_rate=sample_rate, max_clips=max_eval_clips, seed=seed
        )
        if set(labels) >= {"zero", "one"}:  # a word-labelled training set: score eval clips as words
            words = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
            eval_manifest["label"] = [words[int(v)] for v in eval_manifest["label"]]
        y_eval = eval_manifest["label"].to_numpy()
        eval_groups, eval_groups_how = eval_norm_groups(eval_manifest)
timings["data"] = data_time.seconds
durations = np.array([len(w) / sample_rate for w in all_waves_list])
print(
    f"{dataset_name}: {len(train_waves)} train / {len(test_waves)} test clips (official split), "
    f"{len(loso_manifest)} for leave-one-speaker-out, {len(labels)} classes, "
    f"{manifest['speaker'].nunique() if has_speakers else 'unknown'} speakers; clip length "
    f"{durations.min():.2f}-{durations.max():.2f} s (median {np.median(durations):.2f} s)"
)
if eval_folder:
    print(f"eval_folder: {len(eval_waves)} clips from {eval_folder}, {len(eval_skipped)} skipped")
update_results(
    out,
    data={
        "dataset": dataset_name,
        "n_train": len(train_waves),
        "n_test": len(test_waves),
        "n_loso": len(loso_manifest),
        "labels": labels,
        "speakers": sorted(manifest["speaker"].unique().tolist()) if has_speakers else None,
        "skipped_files": load_failures,
        "sample_rate": sample_rate,
        "median_clip_seconds": float(np.median(durations)),
        "eval_folder": str(eval_folder) if eval_folder else None,
        "n_eval": len(eval_waves),
        "eval_skipped_files": eval_skipped,
    },
)
print(f"official training split ({len(train_manifest)} clips): clips per speaker and digit")
pd.crosstab(
    train_manifest["label"], train_manifest["speaker"] if has_speakers else pd.Series("all", index=train_manifest.index)
).T.rename_axis(index="speaker", columns="digit")

# %% [markdown]
# ## Speaker-robust training data: augmented copies
#
# `augment_copies` altered versions of every clip: speed perturbation 0.85-1.15x (tempo and
# formants together, the effect of a longer or shorter vocal tract), a random microphone
# colouring (high-pass, low-pass, one peaking band), noise at 5-30 dB SNR (white, pink, brown,
# or with `augment_background` a stretch of real speech from the LibriSpeech sample: babble),
# a synthetic room (RT60 0.15-0.7 s), +-10 dB gain and up to 0.35 s of padding. Each copy is
# fixed per clip and seed, so every model and every fold sees the same copies. Only training
# folds use them; test clips are never altered. The LibriSpeech files used here are not the
# ones under the streaming test below.

# %%
augment_config = DigitAugmentConfig()
libri_manifest, augment_background_waves, stream_background_paths = None, None, []
try:
    libri_manifest = load_librispeech(download=False)
    stream_background_paths = list(libri_manifest.iloc[:: max(1, len(libri_manifest) // 6)].head(6)["path"])
except (FileNotFoundError, OSError) as error:
    print(f"no LibriSpeech sample: {str(error).splitlines()[0][:160]}")
with Stopwatch() as augment_time:
    if augment_background and augment_copies and libri_manifest is not None:
        pool = libri_manifest[~libri_manifest["path"].isin(stream_background_paths)]
        augment_background_waves, _ok, _failed = load_digit_waves(
            pool.iloc[:: max(1, len(pool) // 12)].head(12), sample_rate, False
        )
    copies_of = dict(
        zip(
            all_manifest["path"],
            digit_augmented_copies(
                all_waves_list,
                sample_rate,
                augment_copies,
                seed=seed,
                config=augment_config,
                keys=all_manifest["path"],
                background=augment_background_waves,
            ),
        )
    )
timings["augmentation"] = augment_time.seconds
print(
    f"{augment_copies} augmented copies of {len(copies_of)} clips in {augment_time.seconds:.1f} s; real background: "
    f"{len(augment_background_waves) if augment_background_waves else 0} LibriSpeech clips"
)
if augment_copies and len(all_waves_list):
    fig, axes = plt.subplots(1, 1 + augment_copies, figsize=(3.4 * (1 + augment_copies), 2.4), sharey=True)
    example_path = all_manifest["path"].iloc[0]
    rng_plot = np.random.default_rng(seed)
    for ax, (name, wave) in zip(
        np.atleast_1d(axes),
        [("original", wave_of[example_path])] + [(f"copy {k + 1}", c) for k, c in enumerate(copies_of[example_path])],
    ):
        # a floor far below the signal: exact digital silence (a copy's padding) has no log (and no warning)
        floor = 1e-6 * max(float(np.abs(wave).max()), 1e-3)
        ax.specgram(np.asarray(wave) + floor * rng_plot.standard_normal(len(wave)), NFFT=256, Fs=sample_rate,
                    noverlap=192, cmap="magma")  # fmt: skip
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("s")
    np.atleast_1d(axes)[0].set_ylabel("Hz")
    fig.suptitle(f"one clip and its augmented copies (label {all_manifest['label'].iloc[0]})", y=1.05)
    save_figure(fig, out, "augmentation_examples")
    plt.show()
update_results(
    out,
    augmentation={
        "copies": augment_copies,
        "config": augment_config.to_dict(),
        "background_clips": len(augment_background_waves) if augment_background_waves else 0,
    },
)

# %% [markdown]
# ## MFCC features
#
# 13 MFCCs per 16 ms hop (64 ms window), with deltas, and **speaker normalisation**
# (`mfcc_cmvn="speaker"`, Kaldi's per-speaker CMVN): every coefficient is centred and scaled
# with its mean and standard deviation over *all the clips of the clip's speaker*. What stays
# constant over a speaker's clips, the microphone's and the vocal tract's colouring, is
# removed; the words, which vary, average out of those statistics and stay. No labels are
# used: a held-out speaker is normalised with their own unlabelled clips, as a recogniser
# adapts to a new user (an `eval_folder` by its sources: a voice, a speaker, a session). A
# speaker with few clips is pulled toward the training clips' statistics
# (`speaker_norm_prior_clips`: n clips weigh n / (n + 5)); a single clip alone (latency,
# streaming, the microphone) is normalised mostly by those. Then time normalisation: the trimmed clip's frames
# are averaged in `n_frames` (12) equal segments, so a digit said fast or slowly gives the
# same vector. Only the low MFCCs are kept: the higher ones describe the voice (pitch
# harmonics, speaker detail) more than the word. Every training clip also gets vectors with
# its spectrum's frequency axis scaled by `svm_vtlp` (0.9, 1.1): vocal-tract length
# perturbation, new "speakers" with longer or shorter vocal tracts. Measured by
# leave-one-speaker-out on FSDD (SVM, same copies): 40 MFCCs, 40 padded frames, per-utterance
# mean+variance CMVN 0.68; 13 MFCCs in 12 segments 0.83; with per-utterance CMN (`mfcc_cmvn="mean"`)
# 0.85; with VTLP 0.85 (worst speaker 0.60 -> 0.76 in the default run); speaker normalisation
# instead of per-utterance CMN 0.917 (worst 0.852), and 0.813 -> 0.850 on 30 espeak-ng
# voices. Over one short word, per-utterance normalisation also removes part of the word.
# The mel filters start at `mfcc_fmin` (0 Hz). Leaving out the lowest band
# (hum, breath, pitch) gives FSDD LOSO 0.847 (0 Hz), 0.854 (50), 0.860 (100), 0.852 (150),
# but digits spoken by 30 espeak-ng voices fall from 0.827 (0 Hz) to 0.770 (100 Hz): it fits
# FSDD's microphones, not digits in general, so it stays off. Computed once for every clip
# and every augmented copy.

# %%
feature_config = DigitFeatureConfig(
    sample_rate=sample_rate,
    n_mfcc=n_mfcc,
    delta_order=delta_order,
    n_frames=n_frames,
    pooling=pooling,
    cmvn={"none": False, "mean+var": True}.get(str(mfcc_cmvn), mfcc_cmvn),
    fmin=float(mfcc_fmin),
    norm_prior_clips=float(speaker_norm_prior_clips),
)
paths = list(all_manifest["path"])
flat_copies = [c for p in paths for c in copies_of[p]]
copy_groups = [(group_of[p], "copy") for p in paths for _ in range(augment_copies)]  # a speaker's copies: a group apart
mfcc_of, mfcc_copies_of = {}, {}
if "svm" in models:  # only the SVM uses these vectors (the CNN computes its own features)
    with Stopwatch() as feature_time:
        mfcc_moments_of = {}
        if feature_config.cmvn == "speaker":  # the prior for speakers with few clips: the training clips' frames
            mfcc_moments_of = dict(zip(paths, digit_mfcc_moments([wave_of[p] for p in paths], feature_config)))
            feature_config.norm_prior = norm_prior_from_moments(mfcc_moments_of[p] for p in train_manifest.path)
        clip_groups = [group_of[p] for p in paths]
        mfcc_of = dict(
            zip(
                paths,
                digit_feature_vectors([wave_of[p] for p in paths], feature_config, progress=True, groups=clip_groups),
            )
        )
        copy_vectors = (
            digit_feature_vectors(flat_copies, feature_config, progress=True, groups=copy_groups) if flat_copies else []
        )
        mfcc_copies_of = {
            p: list(copy_vectors[i * augment_copies : (i + 1) * augment_copies]) for i, p in enumerate(paths)
        }
        for warp in svm_vtlp or []:  # VTLP: the clean clip with its frequency axis scaled, an extra training vector
            warped = digit_feature_vectors(
                [wave_of[p] for p in paths], feature_config, warp=float(warp), groups=[(g, warp) for g in clip_groups]
            )
            for p, vector in zip(paths, warped):
                mfcc_copies_of[p].append(vector)
    timings["mfcc_features"] = feature_time.seconds
    X_train = np.stack([mfcc_of[p] for p in train_manifest.path])
    X_test = np.stack([mfcc_of[p] for p in test_manifest.path]) if len(test_manifest) else X_train[:0]
    print(
        f"MFCC features of {len(paths)} clips and {len(flat_copies)} copies: {X_train.shape[1]} dims, "
        f"{feature_time.seconds:.1f} s"
    )


def with_copies(frame, table, copies_table):
    """Rows of ``table`` for the clips of ``frame`` and their augmented copies: (X, y, groups)."""
    rows, ys, groups = [], [], []
    for i, (path, label) in enumerate(zip(frame["path"], frame["label"])):
        for item in [table[path]] + list(copies_table[path]):
            rows.append(item)
            ys.append(label)
            groups.append(i)
    return rows, np.array(ys), np.array(groups)


if mfcc_of:
    fig, axes = plt.subplots(1, min(5, len(labels)), figsize=(13, 2.6))
    panels = [
        X_train[int(np.flatnonzero(y_train == label)[0])].reshape(feature_config.n_coefficients, -1)[1:n_mfcc]
        if pooling in ("flat", "segments")
        else X_train[int(np.flatnonzero(y_train == label)[0])][None, :]
        for label in labels[: len(np.atleast_1d(axes))]
    ]
    low, high = min(p.min() for p in panels), max(p.max() for p in panels)  # one colour scale: one colour bar
    for ax, label, shown_rows in zip(np.atleast_1d(axes), labels, panels):
        image = ax.imshow(
            shown_rows,
            aspect="auto",
            origin="lower",
            cmap="magma",
            vmin=low,
            vmax=high,
            # rows are MFCCs 1..n_mfcc-1 (0, the level, is left out): the axis says so
            extent=(-0.5, shown_rows.shape[1] - 0.5, 0.5, shown_rows.shape[0] + 0.5) if len(shown_rows) > 1 else None,
        )
        ax.set_title(f"digit {label}", fontsize=9)
        ax.set_xlabel({"segments": f"time segment (of {n_frames})", "flat": "frame"}.get(pooling, pooling))
    np.atleast_1d(axes)[0].set_ylabel("MFCC coefficient")
    normalised = "speaker" if feature_config.cmvn == "speaker" else "per-utterance"
    fig.colorbar(image, ax=np.atleast_1d(axes).tolist(), label=f"value ({normalised} normalised)", pad=0.01)
    shown = min(5, len(labels))
    fig.suptitle(
        f"MFCCs 1-{n_mfcc - 1} after {normalised} normalisation: one training clip of each of the first {shown} "
        f"classes ({', '.join(map(str, labels[:shown]))})",
        y=1.04,
    )
    save_figure(fig, out, "mfcc_examples")
    plt.show()

# %% [markdown]
# ## Models, and how each is trained on a set of clips
#
# One `fit_*` function per model trains it on any set of clips (the official training split,
# or five speakers of a LOSO fold), so the official-split model and the LOSO folds are
# trained the same way. The SVM's C and gamma come from a stratified K-fold grid search on the
# clean official training clips (the seed's grid: C 0.5-8, gamma scale/auto/0.01/0.05/0.1)
# whose folds are grouped by speaker (`StratifiedGroupKFold`), so the chosen values are the
# ones that generalise to a voice the fold did not train on; it is then refitted on those
# clips, their augmented copies and their VTLP vectors.
#
# The CNN sees 20 MFCCs (`cnn_n_mfcc`) with speaker normalisation (`cnn_cmvn="speaker"`, as the
# SVM's: its own front end's frames over each speaker's clips; the copies of a clip take its
# speaker's statistics), and with `cnn_time_steps`
# (32) the frames from the clip's first to its last sound are resampled to 32 steps (time
# normalisation, as the SVM's segments; waveform noise is then added only over the clip).
# Leave-one-speaker-out on FSDD, 12 epochs per fold, per-utterance CMVN (`cnn_cmvn=True`): 40
# MFCCs 0.77, 20 MFCCs 0.81, 20 MFCCs time-normalised 0.83. At prediction the CNN averages its
# softmax over the clip with its spectrum warped by 0.9, 1.0 and 1.1 (`cnn_test_warps`: test-time
# vocal-tract length perturbation, the same voice with a shorter or longer vocal tract; each warp
# with its own speaker statistics): 0.825 -> 0.835 mean, worst speaker 0.72 -> 0.76, and 0.797 ->
# 0.817 on 30 espeak-ng voices, for three forward passes per clip. Random warps or mixup in
# training did not help. Speaker normalisation: 0.849 -> 0.891 with 12 epochs per fold, 0.914
# with 20 (`loso_cnn_epochs`; seed 1: 0.902; per-utterance CMVN with 20 epochs: 0.829); without
# the test-time warps 0.873.

# %%
results_models, fitted, loso_results, skipped = {}, {}, {}, {}
svm_search = None


def svm_grid_search(X, y, groups):
    """The C x gamma grid search of the notebook's parameters on ``X``, ``y`` (folds grouped by ``groups``)."""
    return grid_search_digit_pipeline(
        X,
        y,
        classifier=classifier,
        pca_components=pca_components,
        C_grid=c_grid,
        gamma_grid=gamma_grid,
        cv_folds=cv_folds,
        seed=seed,
        groups=groups,
    )


if "svm" in models:
    with Stopwatch() as grid_time:
        svm_search = svm_grid_search(X_train, y_train, train_manifest["speaker"].to_numpy() if has_speakers else None)
    cv_table = pd.DataFrame(svm_search.cv_results_)[["params", "mean_test_score", "std_test_score", "mean_fit_time"]]
    print(
        f"grid search: best CV accuracy {svm_search.best_score_:.4f} with {svm_search.best_params_} "
        f"({svm_search.audiolens_info['cv_folds']} folds, PCA {svm_search.audiolens_info['pca_components']}, "
        f"{grid_time.seconds:.1f} s)"
    )
    ranked_cv = cv_table.sort_values("mean_test_score", ascending=False)
    spread = ranked_cv["mean_test_score"].iloc[0] - ranked_cv["mean_test_score"].iloc[min(2, len(ranked_cv) - 1)]
    close = spread < ranked_cv["std_test_score"].iloc[0]
    folds = "folds grouped by speaker" if has_speakers else "stratified folds"
    print(
        f"the 8 best of {len(ranked_cv)} settings ({folds}); "
        f"the top 3 are within {spread:.4f} of each other"
        + (", closer than the fold spread: any would do" if close else "")
    )
    display(ranked_cv.head(8).round(4))


def fit_svm(frame, search=None):
    """The SVM pipeline the grid search chose (``search``: another search's choice), fitted on ``frame``'s clips
    and their augmented copies."""
    X, y, _groups = with_copies(frame, mfcc_of, mfcc_copies_of)
    pipeline = clone((search or svm_search).best_estimator_).fit(np.stack(X), y)
    config = feature_config
    if mfcc_moments_of:  # the clips it normalises (a LOSO fold's held-out speakers) meet the prior of its own clips
        prior = norm_prior_from_moments(mfcc_moments_of[p] for p in frame.path)
        config = DigitFeatureConfig.from_dict({**feature_config.to_dict(), "norm_prior": prior})
    return SklearnDigitModel(pipeline, config, labels=pipeline.classes_)


cnn_config = DigitCnnConfig(
    sample_rate=sample_rate,
    features=cnn_features,
    n_mfcc=cnn_n_mfcc,
    time_steps=cnn_time_steps,
    labels=labels,
    epochs=cnn_epochs,
    patience=cnn_patience,
    batch_size=cnn_batch_size,
    learning_rate=float(cnn_lr_grid[0]),
    cmvn=cnn_cmvn,
    norm_prior_clips=float(speaker_norm_prior_clips),
    test_warps=tuple(cnn_test_warps) if cnn_test_warps else None,
)


def fit_cnn(frame, epochs=None, progress=False):
    config = DigitCnnConfig.from_dict({**cnn_config.to_dict(), **({"epochs": epochs} if epochs else {})})
    model, _history = train_digit_cnn(
        [wave_of[p] for p in frame.path],
        frame["label"].to_numpy(),
        config,
        device=device,
        seed=seed,
        progress=progress,
        variants=[copies_of[p] for p in frame.path],
        groups=[group_of[p] for p in frame.path],
    )
    return model


# %% [markdown]
# ### The pretrained encoder: Whisper tiny.en frames, computed once per clip
#
# The bundled Whisper tiny.en encoder (frozen) turns every clip, trimmed and placed at the
# start of an `encoder_window_seconds` (1.5 s) window of silence, into 50 frames per second
# (only the clip's own frames are kept); `encoder_whisper_mode="clip"` slices the positional
# embeddings to that window instead of padding to Whisper's 30 s (about 20x faster;
# `"padded"` is the reference). A 1.5 s window scored as well as 3 s by held-out speaker
# (layer 3: head 0.987 both; a linear probe about 0.98, as in the per-layer curve below) at
# half the cost. The head mixes layers 2-4
# (the three best of the per-layer curve below) with learned weights and trains with 25% of the
# frames masked and label smoothing 0.2: the same LOSO mean as layer 3 alone, and slightly better
# on held-out speakers in real background noise and on other voices (`encoder_layers=[3]`,
# `encoder_frame_mask_prob=0.15`, `encoder_label_smoothing=0.1` is the earlier setting). The
# frames of every clip and every augmented copy are cached on disk per clip, so reruns, LOSO
# folds and the layer curve reuse them.
#
# **Speaker normalisation** (`encoder_speaker_norm="mean"`): each speaker's mean frame (per
# layer and dimension, over all their clips, unlabelled) is subtracted before the head, as the
# SVM and CNN normalise their MFCCs; the Whisper prior reads the encoder's own frames. Whisper's
# features are already speaker-robust, and here every variant lies within a few clips of the
# others (FSDD LOSO mean / worst speaker, 30 espeak-ng voices, 60 espeak-ng women's voices):
# none 0.9897 / 0.970, 0.953, 0.892; mean 0.9903 / 0.970, 0.953, 0.892; mean and variance
# (`"mean+var"`) 0.9893 / 0.962, 0.963, 0.898. The mean alone is Kaldi's default and the
# head's layer norm rescales every frame anyway.
#
# **Whisper's own decoder as a prior** (`encoder_whisper_prior`): the decoder already knows the
# ten digit words. It reads the encoder's final layer (layer 4: the frames the head already
# uses), after the prefix `<|startofprev|> zero one ... nine <|startoftranscript|><|notimestamps|>`,
# and the log-probability of each digit's spellings as the first word (" seven", "Seven", " 7",
# "oh" for zero...) gives ten scores per clip: a forced choice, nothing trained, a few ms per
# clip in batches (this run prints its own figure). The model's scores are
# `log_softmax(head) + weight * log_softmax(Whisper)`. The weight is fitted by log loss on
# held-out logits (`encoder_prior_weight=None`): in each LOSO fold on the other speakers'
# held-out logits (never the held-out speaker's own clips), and for the saved model on every
# speaker's. Measured in development runs, not this one (FSDD LOSO mean / worst speaker, 300
# espeak-ng clips): forced choice alone 0.968 / 0.904 / 0.927, head alone 0.986 / 0.958 /
# 0.947, fused 0.988 / 0.964 / 0.957 (weight about 0.25), with the earlier 35 dB trim and no
# onset crops.
#
# **The prior hears an eval clip's own band** (`encoder_prior_wideband`). The head learnt
# FSDD's 8 kHz recordings, so it reads every clip at `sample_rate` (nothing above 4 kHz). The
# decoder learnt 16 kHz speech: for `eval_folder` it scores the clips at 16 kHz, from a second
# encoder pass, and hears the fricatives of "six", "seven" and "zero" that 8 kHz cuts (the
# zero-shot row hears 16 kHz too). Measured on the saved model of a default run, weight 0.26 as
# fitted on FSDD: forced choice alone 0.920 at 8 kHz, 0.967 at 16 kHz on 300 espeak-ng clips
# (0.783 / 0.892 on 600 women's voices); fused 0.953 / 0.970 (0.892 / 0.910). FSDD itself is
# 8 kHz, so LOSO is unchanged. `eval_folder.encoder.prior_at_head_band` gives the run's own
# figure with the prior at 8 kHz; `predict_audio_files` does the same (`wideband=True`), and
# so does the live recogniser fed from a microphone or a file recorded above 8 kHz (it keeps
# the last 10 s at 16 kHz for the prior; continuous mode's sliding windows stay at 8 kHz). The
# latency figures below are one 8 kHz clip, one pass.
#
# Two settings aim at the words the model missed. Clip edges are trimmed only 50 dB below the
# peak (`encoder_trim_db`): at 35 dB the trim cut the weak fricatives at 8 kHz, the /ks/ of
# "six" (yweweler's sixes then read as "eight"). And `encoder_crop_prob` of the encoder's
# augmented copies keep only the first 0.2-0.45 s of the word (onset crops), as a recorder or a
# voice-activity detector cuts a word short: FSDD has such clips (nicolas's "th-" of a three).
# The other copies are the ones every model trains on. Fused LOSO mean / worst speaker /
# espeak-ng, three head seeds each: 35 dB, no crops 0.988 / 0.964-0.968 / 0.953-0.960; crops
# alone 0.988-0.989 / 0.968-0.974 / 0.947-0.957; 50 dB alone 0.986-0.989 / 0.948-0.966 (more
# of nicolas's cut words missed); both 0.988-0.991 / 0.964-0.970 / 0.947-0.967 (yweweler 6-9
# errors instead of 10).
#
# **Re-voiced copies** (`encoder_voice_prob`, off by default): FSDD's six speakers are all men.
# With it, that share of the encoder's copies that are not crops is re-voiced before the other
# alterations: pitch raised 1.3-2x and formants 1.05-1.25x, each by its own factor
# (`digit_voice_shift`), towards women's and children's voices. Measured the same way, 0.5:
# 0.988-0.989 / 0.954-0.966 / 0.953-0.967 (nicolas 17-23 errors instead of 15-18); re-voicing the
# crops as well: 0.987-0.989 / 0.954-0.960 / 0.963-0.970. LOSO cannot show a gain here (every
# held-out speaker is a man) and the espeak-ng self-check moves within its seed spread, so it
# stays off: an option to try, and score, where the voices to recognise are women's or children's.
#
# **Fine-tuning the top encoder block** (`encoder_finetune_top`, off by default): hidden state 3
# is the input of Whisper's top block (block 3; hidden state 4 is its output after the final
# layer norm), so a trainable copy of that block and of the final layer norm can run on the
# cached layer-3 frames and be trained with the head (learning rate 2e-4, no weight decay), with
# no extra encoder pass. Its output replaces layer 4 in the head's mix; the Whisper prior still
# reads the frozen encoder's layer 4, what its decoder was trained on. Measured on all 3,000
# FSDD clips (6 folds, 20 epochs, same copies, 35 dB trim, no crops; head alone / fused LOSO
# mean, fused worst speaker nicolas; espeak-ng fused, mean of the fold models): frozen 0.987 /
# 0.988, 0.968; fine-tuned
# 0.987 / 0.987, 0.966; espeak-ng 0.956 vs 0.959. No held-out-speaker gain (a learning rate
# of 5e-4 was worse: jackson 0.992 -> 0.984, nicolas 0.966 -> 0.958), and training is about 5x
# slower (one thread: 2.9 s vs 14.7 s per epoch), so it stays an option.

# %%
encoder_adapter, encoder_features_info = None, {}
encoder_config = DigitEncoderConfig(
    model=str(encoder_model),
    whisper_mode=encoder_whisper_mode,
    layers=list(encoder_layers),
    input_sample_rate=sample_rate,
    pooling=encoder_pooling,
    combine=encoder_combine,
    window_seconds=float(encoder_window_seconds),
    trim_db=None if encoder_trim_db is None else float(encoder_trim_db),
    labels=labels,
    epochs=encoder_epochs,
    frame_mask_prob=float(encoder_frame_mask_prob),
    label_smoothing=float(encoder_label_smoothing),
    whisper_prior=bool(encoder_whisper_prior) and digit_prior_columns(labels) is not None,
    prior_weight=DIGIT_PRIOR_DEFAULT_WEIGHT if encoder_prior_weight is None else float(encoder_prior_weight),
    finetune_top=bool(encoder_finetune_top),
    speaker_norm=False if encoder_finetune_top or encoder_speaker_norm in (None, "none") else encoder_speaker_norm,
    norm_prior_clips=float(speaker_norm_prior_clips),
)
if encoder_speaker_norm not in (None, "none") and encoder_finetune_top:
    print("encoder: speaker normalisation is off with encoder_finetune_top (the block reads the encoder's own frames)")
if "encoder" in models:
    try:
        encoder_adapter = load_digit_encoder_adapter(encoder_model, encoder_whisper_mode, device=device)
    except Exception as error:  # noqa: BLE001 - ModelLoadError, BundledWhisperError, ValueError: say why and go on
        skipped["encoder"] = f"cannot load encoder {encoder_model!r}: {error}"
        print(f"Pretrained-encoder model skipped: {skipped['encoder']}")
if encoder_adapter is not None:
    cache_root = (
        Path(encoder_cache_dir).expanduser() if encoder_cache_dir else Path.home() / ".cache/audiolens/digit-encoder"
    )
    with Stopwatch() as encoder_time:
        clean = digit_encoder_features(
            encoder_adapter, [wave_of[p] for p in paths], encoder_config, cache_dir=cache_root
        )
        encoder_flat_copies = flat_copies
        encoder_augment_config = DigitAugmentConfig.from_dict(
            {**augment_config.to_dict(), "crop_prob": encoder_crop_prob, "voice_prob": encoder_voice_prob}
        )
        if (encoder_crop_prob or encoder_voice_prob) and augment_copies:  # some copies replaced (only those drawn)
            encoder_flat_copies = [
                c
                for cs in digit_augmented_copies(
                    [wave_of[p] for p in paths],
                    sample_rate,
                    augment_copies,
                    seed=seed,
                    config=encoder_augment_config,
                    keys=paths,
                    background=augment_background_waves,
                    plain=[copies_of[p] for p in paths],
                )
                for c in cs
            ]
        copies = digit_encoder_features(
            encoder_adapter, encoder_flat_copies, encoder_config, cache_dir=cache_root, desc="encoder features (copies)"
        )
        eval_features = (
            digit_encoder_features(encoder_adapter, eval_waves, encoder_config, cache_dir=cache_root, desc="eval clips")
            if eval_waves
            else None
        )
    timings["encoder_features"] = encoder_time.seconds
    copy_kinds = [digit_copy_plan(p, k, seed, encoder_augment_config)[0] for p in paths for k in range(augment_copies)]
    enc_frames_of = dict(zip(paths, clean["frames"]))
    enc_pooled_of = dict(zip(paths, clean["pooled"]))
    enc_copy_frames_of = {
        p: copies["frames"][i * augment_copies : (i + 1) * augment_copies] for i, p in enumerate(paths)
    }
    enc_input_of, enc_copy_input_of = enc_frames_of, enc_copy_frames_of  # what the head trains on
    if encoder_config.speaker_norm:  # each speaker's frames normalised together; copies a group apart
        encoder_config.norm_prior = encoder_norm_prior([enc_frames_of[p] for p in train_manifest.path])
        enc_input_of = dict(
            zip(paths, speaker_normalised_frames(clean["frames"], [group_of[p] for p in paths], encoder_config))
        )
        normalised_copies = speaker_normalised_frames(copies["frames"], copy_groups, encoder_config)
        enc_copy_input_of = {
            p: normalised_copies[i * augment_copies : (i + 1) * augment_copies] for i, p in enumerate(paths)
        }
        enc_copy_frames_of = enc_copy_input_of  # the head reads only these: the raw copies' memory is freed
        del copies["frames"], normalised_copies
    encoder_features_info = {
        "model": encoder_adapter.name,
        "whisper_mode": getattr(encoder_adapter, "whisper_mode", encoder_whisper_mode),
        "weights": getattr(encoder_adapter, "weights", "pretrained"),
        "layer_names": clean["layer_names"],
        "head_layers": clean["frame_layers"],
        "seconds": encoder_time.seconds,
        "clips": len(paths) + len(encoder_flat_copies) + len(eval_waves),
        "trim_db": encoder_config.trim_db,
        "crop_prob": float(encoder_crop_prob) if augment_copies else 0.0,
        "voice_prob": float(encoder_voice_prob) if augment_copies else 0.0,
        "cropped_copies": copy_kinds.count("crop"),
        "revoiced_copies": copy_kinds.count("voice"),
        "cache": {"clean": clean["cache"], "copies": copies["cache"]},
    }
    parts = [("clips", clean), ("augmented copies", copies)] + ([("eval clips", eval_features)] if eval_waves else [])
    cached = ", ".join(
        f"{what} {c['cache']['hits']} from the cache, {c['cache']['misses']} computed"
        for what, c in parts
        if c["cache"]
    )
    print(
        f"encoder {encoder_adapter.name} ({encoder_features_info['whisper_mode']} mode): "
        f"{encoder_features_info['clips']} clips in {encoder_time.seconds:.1f} s"
        + (f" ({cached}; cache folder {cache_root})" if cached else " (no cache)")
    )
finetune_info = {"used": False}
if encoder_adapter is not None and encoder_config.finetune_top:
    try:  # a Whisper encoder whose top block's input and output layers are both among the head's layers
        probe_block = digit_top_block(encoder_adapter)
        digit_top_positions(encoder_config.layers, probe_block)
    except ValueError as error:
        encoder_config.finetune_top = False
        finetune_info["skipped"] = f"no top-block fine-tuning: {error}"
        print(finetune_info["skipped"])
    else:
        finetune_info = {
            "used": True,
            "what": f"a copy of encoder block {probe_block.target_layer - 1} and the final layer norm, run on the "
            f"cached layer-{probe_block.source_layer} frames; its output replaces layer {probe_block.target_layer} "
            "in the head's mix; the Whisper prior reads the frozen encoder",
            "learning_rate": encoder_config.top_learning_rate,
            "silence_context": encoder_config.top_context,
            "trainable_parameters": sum(p.numel() for p in probe_block.parameters()),
        }
enc_prior_of, eval_prior, eval_prior_model_band, prior_info, prior_scorer = {}, None, None, {"used": False}, None
prior_wideband_rows = []  # eval clips whose prior hears them at 16 kHz
if encoder_adapter is not None and encoder_config.whisper_prior:
    try:
        prior_scorer = load_digit_prior_scorer(encoder_adapter, encoder_config)
    except (OSError, ValueError) as error:  # no tokenizer, not a Whisper, no special tokens: say why, go on
        encoder_config.whisper_prior = False
        prior_info["skipped"] = f"no Whisper digit prior: {str(error).splitlines()[0][:300]}"
        print(prior_info["skipped"])
if prior_scorer is not None:
    # Whisper's decoder reads the encoder's final layer: the head's own frames when it uses that layer
    final_at = digit_final_layer_position(encoder_adapter, encoder_config)
    with Stopwatch() as prior_time:
        if final_at is None:
            finals = digit_encoder_features(
                encoder_adapter,
                [wave_of[p] for p in paths] + list(eval_waves),
                encoder_config,
                frame_layers=[encoder_adapter.num_layers],
                cache_dir=cache_root,
                desc="final encoder layer",
            )["frames"]
            final_at = 0
        else:
            finals = clean["frames"] + (eval_features["frames"] if eval_features else [])
        scores = digit_prior_scores(prior_scorer, [f[:, final_at] for f in finals], labels)
    enc_prior_of = dict(zip(paths, scores[: len(paths)]))
    eval_prior = eval_prior_model_band = scores[len(paths) :] if eval_waves else None
    if eval_waves and encoder_prior_wideband and encoder_config.input_sample_rate < WHISPER_SAMPLE_RATE:
        prior_wideband_rows = files_above_rate(eval_manifest.path, encoder_config.input_sample_rate)
    with Stopwatch() as wide_time:  # the prior hears those clips' own band; the head reads them at sample_rate
        if prior_wideband_rows:
            eval_prior = eval_prior_model_band.copy()
        for start in range(0, len(prior_wideband_rows), 2000):  # at most 2,000 clips at 16 kHz in memory
            rows = prior_wideband_rows[start : start + 2000]
            clips = load_eval_clips_at(eval_manifest, rows, WHISPER_SAMPLE_RATE)  # None: keeps its 8 kHz prior
            rows = [r for r, clip in zip(rows, clips) if clip is not None]
            if rows:
                wide_finals = digit_encoder_features(
                    encoder_adapter,
                    [clip for clip in clips if clip is not None],
                    encoder_config.wideband(),
                    frame_layers=[encoder_adapter.num_layers],
                    cache_dir=cache_root,
                    desc="eval clips at 16 kHz (prior)",
                )["frames"]
                eval_prior[rows] = digit_prior_scores(prior_scorer, [f[:, 0] for f in wide_finals], labels)
    eval_band = None  # what the prior heard of the eval clips
    if prior_wideband_rows:
        eval_band = (
            f"16 kHz for the {len(prior_wideband_rows)} eval clips recorded above {encoder_config.input_sample_rate} "
            "Hz (their own band; the head reads them at that rate)"
        )
        print(f"Whisper digit scores at {eval_band}, in {wide_time.seconds:.1f} s")
    elif eval_waves:
        eval_band = f"{encoder_config.input_sample_rate} Hz, the head's band"
    prior_info = {
        "used": True,
        "what": "log_softmax(head) + weight * log_softmax(Whisper decoder digit scores), forced choice",
        "final_layer": str(encoder_adapter.num_layers),
        "scorer": prior_scorer.info(),
        "seconds": prior_time.seconds,
        "ms_per_clip": 1000 * prior_time.seconds / max(1, len(finals)),
        "eval_band": eval_band,
        "eval_wideband_seconds": wide_time.seconds,
    }
    print(f"Whisper digit scores of {len(finals)} clips in {prior_time.seconds:.1f} s (decoder, forced choice)")


def fit_encoder(frame, progress=False, fold=False):
    """The encoder head trained on ``frame``'s clips; ``fold``: a LOSO fold's model, whose speaker normalisation
    takes its prior from its own training clips (the official model's config is the shared ``encoder_config``,
    on which the fitted prior weight is set later)."""
    config = encoder_config
    if fold and encoder_config.speaker_norm:
        prior = encoder_norm_prior([enc_frames_of[p] for p in frame.path])
        config = DigitEncoderConfig.from_dict({**encoder_config.to_dict(), "norm_prior": prior})
    head, history = train_digit_encoder_head(
        [enc_input_of[p] for p in frame.path],
        list(frame["label"]),
        encoder_config,
        variants=[enc_copy_input_of[p] for p in frame.path],
        device=device,
        seed=seed,
        progress=progress,
        top_block=digit_top_block(
            encoder_adapter, encoder_config.top_context, encoder_config.window_seconds, encoder_config.max_seconds
        )
        if encoder_config.finetune_top
        else None,
    )
    model = EncoderDigitModel(encoder_adapter, head, config, device=device, scorer=prior_scorer)
    model.history = history
    return model


# %% [markdown]
# ### Wav2Vec2 (where its checkpoint loads)
#
# The pretrained model gets a fresh head and is fine-tuned end to end on 16 kHz audio with
# noise augmentation (`wav2vec2_noise_prob`); `wav2vec2_lr_grid` picks the learning rate on
# a validation split. Offline without a cached checkpoint, or on a CPU unless
# `wav2vec2_on_cpu`, it is skipped with the reason recorded.

# %%
w2v_extractor = None
if "wav2vec2" in models:
    try:
        probe_model, w2v_extractor = load_wav2vec2_classifier(
            wav2vec2_model, labels=labels, freeze_feature_encoder=wav2vec2_freeze_feature_encoder, seed=seed
        )
    except Wav2Vec2Unavailable as error:
        skipped["wav2vec2"] = str(error)
    else:
        n_params = sum(p.numel() for p in probe_model.parameters())
        if device == "cpu" and not wav2vec2_on_cpu and n_params > 5_000_000:
            skipped["wav2vec2"] = (
                f"{wav2vec2_model} has {n_params / 1e6:.0f} M parameters and no GPU is available; "
                "set wav2vec2_on_cpu=True to fine-tune on the CPU anyway (slow)"
            )
        del probe_model
    if "wav2vec2" in skipped:
        print(f"Wav2Vec2 skipped: {skipped['wav2vec2']}")
w2v_lr = float(wav2vec2_lr_grid[0])


def w2v_factory():
    return load_wav2vec2_classifier(
        wav2vec2_model, labels=labels, freeze_feature_encoder=wav2vec2_freeze_feature_encoder, seed=seed
    )[0]


def fit_wav2vec2(frame, lr_grid=None, progress=False):
    kwargs = dict(
        label_list=labels,
        input_sample_rate=sample_rate,
        epochs=wav2vec2_epochs,
        batch_size=wav2vec2_batch_size,
        max_steps=wav2vec2_max_steps,
        device=device,
        seed=seed,
        progress=progress,
        noise_prob=wav2vec2_noise_prob,
    )
    waves, y = [wave_of[p] for p in frame.path], frame["label"].to_numpy()
    if lr_grid:
        model, history, table = finetune_wav2vec2_lr_grid(w2v_factory, w2v_extractor, waves, y, lr_grid, **kwargs)
        model.lr_table = table
    else:
        model, history = finetune_wav2vec2(w2v_factory(), w2v_extractor, waves, y, learning_rate=w2v_lr, **kwargs)
    model.history = history
    return model


trainable = [m for m in ("svm", "cnn", "encoder", "wav2vec2") if m in models and m not in skipped]
print(f"models to train: {trainable}; skipped: {skipped or 'none'}")

# %% [markdown]
# ## Official split (speaker-overlapping): train every model
#
# The official FSDD test clips come from the same six speakers as the training clips, so
# these accuracies say how well a model knows *these voices*. They are kept as a secondary
# row; the models trained here are the ones saved, timed, used live and scored on
# `eval_folder`.

# %%
summaries, histories = {}, {}
for name in trainable:
    with Stopwatch() as fit_time:
        if name == "svm":
            model = fit_svm(train_manifest)
        elif name == "cnn":
            frame = train_manifest
            model, history, lr_table = train_digit_cnn_lr_grid(
                [wave_of[p] for p in frame.path],
                frame["label"].to_numpy(),
                cnn_config,
                cnn_lr_grid,
                device=device,
                seed=seed,
                variants=[copies_of[p] for p in frame.path],
                groups=[group_of[p] for p in frame.path],
            )
            cnn_config = DigitCnnConfig.from_dict({**cnn_config.to_dict(), "learning_rate": model.config.learning_rate})
            histories["cnn"] = {**history, "lr_grid": lr_table}
        elif name == "encoder":
            model = fit_encoder(train_manifest, progress=True)
            histories["encoder"] = model.history
        else:
            model = fit_wav2vec2(train_manifest, lr_grid=wav2vec2_lr_grid, progress=True)
            w2v_lr = float(model.history["learning_rate"])
            histories["wav2vec2"] = {**model.history, "lr_grid": model.lr_table}
    fitted[name] = model
    if len(test_waves):
        if name == "encoder":
            pred = np.asarray(model.labels)[
                model.logits_from_frames(
                    [enc_frames_of[p] for p in test_manifest.path],
                    prior=np.stack([enc_prior_of[p] for p in test_manifest.path]) if enc_prior_of else None,
                    groups=[group_of[p] for p in test_manifest.path],
                ).argmax(1)
            ]
        else:
            pred = model.predict(test_waves, groups=[group_of[p] for p in test_manifest.path])
        summaries[name] = classification_summary(
            y_test, pred, labels=labels, speakers=test_manifest["speaker"] if has_speakers else None
        )
    results_models[name] = {
        "official_split_accuracy": summaries[name]["accuracy"] if name in summaries else None,
        "official_split_note": "speaker-overlapping: the test speakers are in the training set",
        "macro_f1": summaries[name]["macro_f1"] if name in summaries else None,
        "train_seconds": fit_time.seconds,
        "augment_copies": augment_copies,
        "per_class": summaries[name]["per_class"] if name in summaries else None,
        "confusion_matrix": summaries[name]["confusion_matrix"] if name in summaries else None,
    }
    print(
        f"{name}: official-split accuracy {results_models[name]['official_split_accuracy']}, {fit_time.seconds:.1f} s"
    )


def config_for_results(config) -> dict:
    """A model's settings for results.json; the speaker normalisation's prior (up to 2,304 numbers) is only
    summarised: the model file holds it."""
    values = config.to_dict()
    prior = values.get("norm_prior")
    return {**values, "norm_prior": f"{np.size(prior['mean'])} means and stds (in the model file)" if prior else None}


if "svm" in fitted:
    results_models["svm"].update(
        cv_accuracy=float(svm_search.best_score_),
        cv_folds=svm_search.audiolens_info["cv_folds"],
        best_params=dict(svm_search.best_params_),
        pca_components=svm_search.audiolens_info["pca_components"],
        classifier=classifier,
        feature_config=config_for_results(feature_config),
    )
    save_sklearn_digit_model(fitted["svm"], models_dir / "svm.joblib")
    results_models["svm"]["model_file"] = "models/svm.joblib"
if "cnn" in fitted:
    h = histories["cnn"]
    results_models["cnn"].update(
        val_accuracy=h["best_val_accuracy"],
        best_epoch=h["best_epoch"],
        epochs_run=len(h["epoch"]),
        stopped_early=h["stopped_early"],
        lr_grid=h["lr_grid"],
        config=config_for_results(fitted["cnn"].config),
        model_file="models/cnn.pt",
    )
    save_cnn_digit_model(fitted["cnn"], models_dir / "cnn.pt")
if "encoder" in fitted:
    results_models["encoder"].update(
        config=config_for_results(encoder_config),
        encoder=encoder_features_info,
        layer_weights=histories["encoder"]["layer_weights"],
        final_train_accuracy=histories["encoder"]["train_accuracy"][-1],
        model_file="models/encoder.pt",
        finetune_top=finetune_info,
        whisper_prior={
            **prior_info,
            "official_split_weight": encoder_config.prior_weight if prior_info["used"] else None,
        },
    )
    save_encoder_digit_model(fitted["encoder"], models_dir / "encoder.pt")
if "wav2vec2" in fitted:
    results_models["wav2vec2"].update(
        model=wav2vec2_model,
        val_accuracy=histories["wav2vec2"]["best_val_accuracy"],
        steps=histories["wav2vec2"]["steps"],
        lr_grid=histories["wav2vec2"]["lr_grid"],
        noise_prob=wav2vec2_noise_prob,
        model_file="models/wav2vec2",
    )
    save_wav2vec2_digit_model(fitted["wav2vec2"], models_dir / "wav2vec2")
for name, reason in skipped.items():
    results_models[name] = {"skipped": reason}
speaker_norm_modes = {  # what each model's speaker normalisation does ("" : none)
    "svm": "mean and std" if feature_config.cmvn == "speaker" else "",
    "cnn": "mean and std" if cnn_config.cmvn == "speaker" else "",
    "encoder": {"mean": "mean", "mean+var": "mean and std"}.get(encoder_config.speaker_norm, ""),
}
speaker_normalisation = {
    "models": {m: speaker_norm_modes[m] for m in fitted if speaker_norm_modes.get(m)},
    "what": "each clip's features (SVM: MFCCs; CNN: its front end's frames; encoder: the head's layer frames) "
    "centred (and scaled) with the mean (and std) of all its speaker's clips, no labels used, shrunk toward the "
    f"training clips' statistics: a speaker with n clips weighs n / (n + {speaker_norm_prior_clips:g})",
    "groups": {
        "training, official split, leave-one-speaker-out": "speaker" if has_speakers else "each clip alone",
        "eval_folder": eval_groups_how,
        "latency, streaming, live": "each clip alone (shrunk toward the training statistics)",
    },
    "copies": "SVM and encoder: a speaker's augmented copies normalised together as one group; CNN: a copy "
    "takes its clip's speaker statistics",
    "caveat": "the groups need a mix of words, as a speaker's clips hold: a group of one digit's clips has that "
    "digit normalised away (FSDD LOSO, SVM without copies: one group per digit of the held-out speaker 0.66, "
    "all their clips 0.90, each clip alone 0.85, per-utterance CMN 0.81)",
}
update_results(out, models=results_models, speaker_normalisation=speaker_normalisation)

if "cnn" in histories:
    h = histories["cnn"]
    fig, ax = plt.subplots(1, 2, figsize=(10, 3.2))
    ax[0].plot(h["epoch"], h["train_loss"], label="train loss (augmented clips, label smoothing)")
    ax[0].set_xlabel("epoch")
    ax[0].set_ylabel("cross-entropy")
    ax[0].legend()
    ax[1].plot(h["epoch"], h["train_accuracy"], label="train (augmented copies)")
    ax[1].plot(h["epoch"], h["val_accuracy"], label="validation (clean clips, training speakers)")
    ax[1].set_ylabel("accuracy")
    ax[1].axvline(h["best_epoch"], color="grey", ls=":", label="best checkpoint")
    ax[1].set_xlabel("epoch")
    ax[1].set_ylim(0, 1.02)
    ax[1].legend()
    fig.suptitle("CNN training (official split)")
    save_figure(fig, out, "cnn_training")
    plt.show()
if summaries:
    fig, axes = plt.subplots(1, len(summaries), figsize=(4.8 * len(summaries), 4.2))
    for ax, (name, summary) in zip(np.atleast_1d(axes), summaries.items()):
        plot_confusion(
            summary["confusion_matrix"], summary["labels"], title=f"{name}: {summary['accuracy']:.3f}", ax=ax
        )
    fig.suptitle("official split (speaker-overlapping)", y=1.02)
    fig.tight_layout()
    save_figure(fig, out, "confusion_matrices")
    plt.show()

# %% [markdown]
# ## Leave one speaker out: the headline
#
# For each speaker: train on the other speakers (their clips and augmented copies), test on
# every clip of the held-out speaker (the encoder model: its head, then the Whisper prior fused
# with the fold's weight; the head alone and Whisper's forced choice alone are listed beside it).
# Each model is retrained per fold exactly as above
# (the SVM keeps the C and gamma of the grid search, the CNN the learning rate `cnn_lr_grid`
# chose, or its one value, with `loso_cnn_epochs`). The zero-shot Whisper needs no training: it is scored on
# `zero_shot_max_clips` clips of the same held-out speakers. A data set with more than
# `loso_max_folds` (10) speakers (AudioMNIST's 60, Speech Commands' thousands) holds its
# speakers out in that many groups: each speaker is still scored by a model that never heard
# them, in 10 fits rather than one per speaker.
#
# How far to trust these figures: the defaults of every model (features, augmentation, encoder
# layers, trim, crops) were chosen on FSDD LOSO runs, the ones quoted in the notes above, so
# FSDD LOSO served as the development set and its figures are slightly optimistic. The SVM's C
# and gamma come from the grid search above, which saw every speaker's official training clips
# (`loso_svm_grid=True` repeats it inside each fold, on the fold's training speakers only). No
# choice was made on `eval_folder` clips: they are the held-out check. The CNN trains
# `loso_cnn_epochs` per fold (its one-cycle schedule completes in that budget), the saved CNN
# `cnn_epochs`. With speaker normalisation (the SVM, CNN and encoder by default) the held-out
# speaker's *unlabelled* clips set the statistics their features are normalised with: the
# figures are those of a recogniser that adapts to a new user from their speech (a single clip
# alone is normalised mostly by the training statistics: see the streaming section). FSDD's
# speakers say every digit equally often, the best case for it: a group of clips of one digit
# would have that digit normalised away (`results.json`: `speaker_normalisation.caveat`). A fold's
# SVM and encoder normalise its held-out speakers with the prior of the fold's own training clips
# (the training clips keep the official split's prior, which weighs under 1% for a 500-clip speaker).

# %%
loso_per_speaker = {}
loso_predictions = {}  # model -> the prediction for every loso_manifest clip, from the fold that held its speaker out
loso_svm_choices = {}  # loso_svm_grid: held-out speaker -> the C and gamma its fold's own grid search chose
encoder_loso_logits = np.zeros((len(loso_manifest), len(labels)), dtype=np.float32)
# speaker normalisation's counterpart: the same fold models, every held-out clip normalised alone (no user's speech)
loso_alone = {m: np.empty(len(loso_manifest), dtype=object) for m in speaker_norm_modes if speaker_norm_modes[m]}
encoder_loso_alone_logits = np.zeros_like(encoder_loso_logits)


def encoder_alone_predictions() -> np.ndarray:
    """The encoder's held-out head logits with each clip normalised alone, fused with each fold's prior weight."""
    if not enc_prior_of:
        return np.asarray(labels)[encoder_loso_alone_logits.argmax(1)]
    prior = np.stack([enc_prior_of[p] for p in loso_manifest.path])
    weights = loso_results["encoder"]["weights"]
    fused = fuse_digit_prior_by_speaker(encoder_loso_alone_logits, prior, loso_manifest["speaker"], weights)
    return np.asarray(labels)[fused.argmax(1)]


def alone_summary(predictions) -> dict:
    """Mean, worst and per-speaker LOSO accuracy of the held-out predictions with each clip normalised alone."""
    summary = loso_from_predictions(loso_manifest["label"].to_numpy(), predictions, loso_manifest["speaker"].to_numpy())
    return {k: summary[k] for k in ("mean_accuracy", "min_accuracy", "per_speaker_accuracy")}


def encoder_prior_loso(head_alone):
    """The encoder's LOSO with the Whisper prior fused (each fold's weight fitted on the other speakers)."""
    targets = np.searchsorted(labels, loso_manifest["label"].to_numpy())
    prior = np.stack([enc_prior_of[p] for p in loso_manifest.path])
    speakers = loso_manifest["speaker"].to_numpy()
    fused = digit_prior_loso(
        encoder_loso_logits, prior, targets, speakers, weight=encoder_prior_weight, folds=head_alone["fold_speakers"]
    )
    alone = loso_from_predictions(targets, prior.argmax(1), speakers)  # Whisper's forced choice alone, untrained
    final = pick_digit_prior_weight(encoder_loso_logits, prior, targets)
    if encoder_prior_weight is None:  # the saved model: the weight fitted on every held-out speaker
        encoder_config.prior_weight = final["weight"]
        save_encoder_digit_model(fitted["encoder"], models_dir / "encoder.pt")
    results_models["encoder"]["whisper_prior"].update(weight=encoder_config.prior_weight, weight_fit=final)
    results_models["encoder"]["config"]["prior_weight"] = encoder_config.prior_weight  # the saved model's
    official = results_models["encoder"]["whisper_prior"].get("official_split_weight")
    print(
        f"Whisper prior, LOSO: head alone {head_alone['mean_accuracy']:.4f} (min {head_alone['min_accuracy']:.4f}), "
        f"forced choice alone {alone['mean_accuracy']:.4f} (min {alone['min_accuracy']:.4f}), fused "
        f"{fused['mean_accuracy']:.4f} (min {fused['min_accuracy']:.4f}); fold weights "
        + (
            f"{ {k: round(float(v), 3) for k, v in fused['weights'].items()} }"
            if len(fused["weights"]) <= 10
            else f"{np.min(list(fused['weights'].values())):.3f}-{np.max(list(fused['weights'].values())):.3f}"
        )
        + "; saved model's weight "
        f"{encoder_config.prior_weight:.3f}"
        + (
            f" (the official-split row above used the weight before this fit, {official:.3f}; the saved model, "
            "eval_folder, latency and streaming use the fitted one)"
            if official is not None and abs(official - encoder_config.prior_weight) > 1e-9
            else ""
        )
    )
    loso_per_speaker["encoder head alone"] = head_alone["per_speaker_accuracy"]
    loso_per_speaker["Whisper forced choice"] = alone["per_speaker_accuracy"]
    folds = {k: head_alone[k] for k in ("folds", "fold_speakers", "seconds_per_fold")}
    return {**fused, **folds, "head_alone": head_alone, "prior_alone": alone}


if not has_speakers:
    print("Leave-one-speaker-out skipped: the data has no speaker column")
    loso_results["skipped"] = "no speaker information"
elif not loso_models:
    print("Leave-one-speaker-out skipped: loso_models is empty")
    loso_results["skipped"] = "loso_models is empty"
else:
    for name in [m for m in loso_models if m != "zero_shot"]:
        if name not in fitted:
            loso_results[name] = {"skipped": skipped.get(name, f"{name} is not in models")}
            print(f"LOSO {name}: skipped ({loso_results[name]['skipped']})")
            continue

        def fold(train_idx, test_idx, name=name):
            train_frame, test_frame = loso_manifest.iloc[train_idx], loso_manifest.iloc[test_idx]
            test_groups = [group_of[p] for p in test_frame.path]  # the held-out speakers' own clips, unlabelled
            if name == "svm":
                search = None
                if loso_svm_grid:  # nested: C and gamma chosen without the held-out speaker's clips
                    search = svm_grid_search(
                        np.stack([mfcc_of[p] for p in train_frame.path]),
                        train_frame["label"].to_numpy(),
                        train_frame["speaker"].to_numpy(),
                    )
                    held = sorted(test_frame["speaker"].astype(str).unique())
                    loso_svm_choices[held[0] if len(held) == 1 else f"{held[0]} and {len(held) - 1} more"] = dict(
                        search.best_params_
                    )
                model = fit_svm(train_frame, search)
            elif name == "cnn":
                model = fit_cnn(train_frame, epochs=loso_cnn_epochs)
            elif name == "encoder":  # the head alone here; the Whisper prior is fused after all folds
                model = fit_encoder(train_frame, fold=True)
                frames = [enc_frames_of[p] for p in test_frame.path]
                encoder_loso_logits[test_idx] = model.head_logits(frames, groups=test_groups)
                if name in loso_alone:
                    encoder_loso_alone_logits[test_idx] = model.head_logits(frames)
                return np.asarray(labels)[encoder_loso_logits[test_idx].argmax(1)]
            if name in ("svm", "cnn"):
                test_waves_of_fold = [wave_of[p] for p in test_frame.path]
                if name in loso_alone:
                    loso_alone[name][test_idx] = list(model.predict(test_waves_of_fold))
                return model.predict(test_waves_of_fold, groups=test_groups)
            return fit_wav2vec2(train_frame).predict([wave_of[p] for p in test_frame.path])

        with Stopwatch() as loso_time:
            loso_results[name] = leave_one_speaker_out(
                fold, loso_manifest, desc=f"leave one speaker out: {name}", max_folds=loso_max_folds, seed=seed
            )
        loso_predictions[name] = loso_results[name].pop("predictions")
        if name == "encoder" and enc_prior_of:
            loso_results[name] = encoder_prior_loso(loso_results[name])
            loso_predictions["encoder head alone"] = loso_predictions[name]
            loso_predictions[name] = np.asarray(labels)[loso_results[name].pop("predictions")]
        loso_results[name]["seconds"] = loso_time.seconds
        if name in loso_alone:  # the same fold models, each held-out clip normalised alone
            if name == "encoder":
                loso_alone[name] = encoder_alone_predictions()
            loso_results[name]["each_clip_alone"] = alone_summary(loso_alone[name])
        loso_per_speaker[name] = loso_results[name]["per_speaker_accuracy"]
        results_models[name].update(
            loso_mean_accuracy=loso_results[name]["mean_accuracy"],
            loso_min_accuracy=loso_results[name]["min_accuracy"],
            loso_ci95=loso_results[name]["ci95"],
        )
        print(
            f"LOSO {name}: mean {loso_results[name]['mean_accuracy']:.4f}, "
            f"min {loso_results[name]['min_accuracy']:.4f} ({loso_time.seconds:.0f} s)"
        )
    if "cnn" in loso_results and "seconds" in loso_results["cnn"]:
        loso_results["cnn"]["epochs_per_fold"] = loso_cnn_epochs
    if "svm" in loso_results and "seconds" in loso_results["svm"]:
        loso_results["svm"]["hyperparameters"] = (
            {"chosen": "per fold, on its training speakers only (loso_svm_grid)", "per_fold": loso_svm_choices}
            if loso_svm_grid
            else {
                "chosen": "once, by the grid search above on the official training clips of every speaker "
                "(the held-out speaker's included; loso_svm_grid=True repeats it inside each fold)",
                "params": dict(svm_search.best_params_),
            }
        )
update_results(out, models=results_models, leave_one_speaker_out=loso_results)

# %% [markdown]
# ### Which encoder layer? Each layer alone, held-out speakers
#
# Every Whisper layer's frames, pooled to their mean and standard deviation, with a logistic
# regression, scored leave-one-speaker-out on clean clips (no augmentation, no head): the
# curve says where digit identity is most speaker-independent. The `encoder_layers` default
# was read from this curve (on FSDD, so the encoder's LOSO figure is slightly optimistic
# about that one choice; `eval_folder` is not affected). The head's learned layer weights
# are printed when it mixes several layers.

# %%
layer_curve = {}
if encoder_layer_curve and "encoder" in fitted and has_speakers and len(loso_manifest):
    with Stopwatch() as curve_time:
        layer_curve = digit_encoder_layer_curve(
            np.stack([enc_pooled_of[p] for p in loso_manifest.path]),
            loso_manifest["label"].to_numpy(),
            loso_manifest["speaker"].to_numpy(),
            encoder_features_info["layer_names"],
            max_folds=loso_max_folds,  # the models' LOSO folds
            seed=seed,
        )
    curve = pd.DataFrame({k: {"mean": v["mean_accuracy"], "min": v["min_accuracy"]} for k, v in layer_curve.items()}).T
    # input side first: the conv front-end, then the encoder layers in depth order
    curve = curve.loc[sorted(curve.index, key=lambda k: k != "conv")]  # layers already in depth order
    best_layer = curve["mean"].idxmax()
    display(curve.round(4).rename_axis("encoder layer"))
    fig, ax = plt.subplots(figsize=(6.5, 3))
    ax.plot(curve.index.astype(str), curve["mean"], "o-", label="mean over held-out speakers")
    ax.plot(curve.index.astype(str), curve["min"], "s--", label="worst held-out speaker")
    ax.set_xlabel("Whisper tiny.en encoder layer")
    ax.set_ylabel("LOSO accuracy")
    ax.set_title("each layer alone: mean+std pooling + logistic regression")
    ax.legend()
    save_figure(fig, out, "encoder_layer_curve")
    plt.show()
    print(
        f"best single layer: {best_layer} (mean {curve['mean'].max():.4f}); the head uses {encoder_config.layers} "
        f"with learned mix weights {results_models['encoder'].get('layer_weights')} (equal weights would be "
        f"{1 / max(1, len(encoder_config.layers)):.3f} each) ({curve_time.seconds:.0f} s)"
    )
    update_results(
        out,
        encoder_layers={
            "curve": layer_curve,
            "best_single_layer": str(best_layer),
            "head_layers": [str(v) for v in encoder_config.layers],
            "head_layer_weights": results_models["encoder"].get("layer_weights"),
            "pooling_for_curve": "mean+std, logistic regression, clean clips",
        },
    )

# %% [markdown]
# ## The bar to beat: zero-shot Whisper tiny.en
#
# The bundled Whisper tiny.en, never trained on these data, with a prompt listing the ten
# digit words and its no-speech/log-probability thresholds off; its transcript is mapped to a
# digit (words, homophones such as "to"/"for", numerals). It is speaker-independent by
# construction, so it is scored per held-out speaker on `zero_shot_max_clips` clips (its
# 30-second window makes every clip cost as much as 30 s of audio), and on every
# `eval_folder` clip at the clip's own sample rate (up to 16 kHz, its best case).

# %%
zero_shot_results, zero_shot = {}, None
zero_shot_loso_predictions = None  # the zero-shot answer per clip of its LOSO subset (path -> label or None)
zero_shot_row = zero_shot_clips = None  # its row in the LOSO figure, and its clips per speaker
if "zero_shot" in loso_models or eval_folder:
    try:
        zero_shot = WhisperZeroShotDigits(sample_rate=sample_rate, labels=labels, compute_type=zero_shot_compute_type)
    except ZeroShotDigitsUnavailable as error:
        zero_shot_results["skipped"] = str(error)
        print(f"zero-shot Whisper skipped: {error}")
if zero_shot is not None:
    zero_shot_results["model"] = zero_shot.info()
    if "zero_shot" in loso_models and has_speakers and len(loso_manifest):
        n_speakers = loso_manifest["speaker"].nunique()
        if n_speakers <= zero_shot_max_clips:  # every speaker, every digit
            per_speaker = max(1, zero_shot_max_clips // n_speakers)
            zs_frame = pd.concat([stratified_subset(g, per_speaker, seed) for _, g in loso_manifest.groupby("speaker")])
            zs_note = f"{per_speaker} clips per speaker"
        else:  # more speakers than clips (Speech Commands): a label-stratified draw over all of them
            zs_frame = stratified_subset(loso_manifest, zero_shot_max_clips, seed, ["label"])
            zs_note = f"{len(zs_frame)} clips of {zs_frame['speaker'].nunique()} speakers"
        with Stopwatch() as zs_time:
            zs_pred, zs_text = zero_shot.predict_with_text([wave_of[p] for p in zs_frame.path], progress=True)
        scores = loso_from_predictions(zs_frame["label"].to_numpy(), zs_pred, zs_frame["speaker"].to_numpy())
        zero_shot_loso_predictions = pd.Series(list(zs_pred), index=list(zs_frame.path), dtype=object)
        zero_shot_results["loso"] = {
            **scores,
            "no_digit": sum(p is None for p in zs_pred),
            "seconds": zs_time.seconds,
            "examples": [{"label": str(t), "text": x} for t, x in list(zip(zs_frame["label"], zs_text))[:12]],
            # scored by the first digit named; an answer naming several (the prompt recited) counts if that is right
            "answers_naming_several_digits": answers_naming_several_digits(zs_text),
        }
        zero_shot_row = f"zero-shot Whisper ({zs_note})"
        zero_shot_clips = zs_frame["speaker"].astype(str).value_counts().to_dict()
        loso_per_speaker[zero_shot_row] = scores["per_speaker_accuracy"]
        print(
            f"zero-shot on {scores['n']} held-out clips: {scores['pooled_accuracy']:.4f} "
            f"(95% CI {scores['ci95'][0]:.3f}-{scores['ci95'][1]:.3f}), per-speaker mean "
            f"{scores['mean_accuracy']:.4f}, min {scores['min_accuracy']:.4f}; "
            f"{zs_time.seconds / scores['n'] * 1000:.0f} ms per clip; "
            f"{zero_shot_results['loso']['answers_naming_several_digits']} answer(s) named several digits "
            "(scored by the first)"
        )
update_results(out, zero_shot=zero_shot_results)

speaker_clips = loso_manifest["speaker"].astype(str).value_counts().to_dict() if loso_per_speaker else {}
loso_clips = dict.fromkeys(loso_per_speaker, speaker_clips)
if zero_shot_row in loso_clips:  # the zero-shot row: its own, smaller subset per speaker
    loso_clips[zero_shot_row] = zero_shot_clips
figure = plot_leave_one_speaker_out(
    loso_per_speaker, title="Leave one speaker out: accuracy on the unseen speaker", clips=loso_clips
)
if figure is not None:
    save_figure(figure, out, "leave_one_speaker_out")
    plt.show()
    table = pd.DataFrame(loso_per_speaker)
    summary_rows = pd.DataFrame({"mean": table.mean(), "min": table.min()}).T
    if len(table) > 30:  # many speakers: the hardest 30, as in the figure (every speaker is in results.json)
        print(f"the 30 hardest of {len(table)} held-out speakers (all of them: results.json, leave_one_speaker_out)")
        table = table.loc[hardest_speakers(loso_per_speaker, 30)]
    display(pd.concat([table, summary_rows]).round(4).rename_axis("held-out speaker"))
else:
    print("no leave-one-speaker-out results to plot")

# %% [markdown]
# ## Digits recorded elsewhere: `eval_folder`
#
# Every trained model (as trained on the official split) and the zero-shot Whisper (on at most
# `zero_shot_max_eval_clips` of them: it decodes slowly) are scored on the folder's clips,
# overall and per source: the sub-folder level that tells clips apart
# (a voice, a microphone, AudioMNIST's speakers) or, where the sub-folders are the digits
# themselves (Speech Commands' `zero/` .. `nine/`), the speaker in the file names
# (`{speaker}_nohash_{n}.wav`, `{digit}_{speaker}_{take}.wav`).

# %%
eval_results, eval_predictions = {}, {}
if eval_folder and len(eval_waves):
    groups = eval_manifest["source"].to_numpy()
    for name, model in fitted.items():
        with Stopwatch() as eval_time:
            if name == "encoder":
                pred = np.asarray(model.labels)[
                    model.logits_from_frames(eval_features["frames"], prior=eval_prior, groups=eval_groups).argmax(1)
                ]
            else:
                pred = model.predict(eval_waves, groups=eval_groups)
        eval_predictions[name] = pred
        eval_results[name] = {**held_out_scores(y_eval, pred, groups), "seconds": eval_time.seconds}
        if speaker_norm_modes.get(name):  # the same model with every eval clip normalised alone
            alone = (
                np.asarray(model.labels)[model.logits_from_frames(eval_features["frames"], prior=eval_prior).argmax(1)]
                if name == "encoder"
                else model.predict(eval_waves)
            )
            eval_results[name]["each_clip_alone_accuracy"] = float(np.mean(alone == y_eval))
        results_models[name]["eval_folder_accuracy"] = eval_results[name]["accuracy"]
        if name == "encoder" and eval_prior is not None:  # the two parts of the fused model on their own
            head_pred = np.asarray(model.labels)[
                model.head_logits(eval_features["frames"], groups=eval_groups).argmax(1)
            ]
            eval_results[name]["head_alone_accuracy"] = float(np.mean(head_pred == y_eval))
            eval_results[name]["prior_alone_accuracy"] = float(
                np.mean(np.asarray(labels)[eval_prior.argmax(1)] == y_eval)
            )
            eval_results[name]["prior_weight"] = model.config.prior_weight
            eval_results[name]["prior_band"] = prior_info["eval_band"]
            if prior_wideband_rows:  # the same model, its prior hearing only the head's band
                narrow = model.logits_from_frames(
                    eval_features["frames"], prior=eval_prior_model_band, groups=eval_groups
                ).argmax(1)
                eval_results[name]["prior_at_head_band"] = {
                    "sample_rate": encoder_config.input_sample_rate,
                    "accuracy": float(np.mean(np.asarray(model.labels)[narrow] == y_eval)),
                    "prior_alone_accuracy": float(
                        np.mean(np.asarray(labels)[eval_prior_model_band.argmax(1)] == y_eval)
                    ),
                }
    if zero_shot is not None:  # on a large folder a subset, stratified by label and source: Whisper decodes slowly
        strata = ["label", "source"] if eval_manifest["source"].nunique() > 1 else ["label"]
        zs_rows = stratified_subset(
            eval_manifest.assign(row=np.arange(len(eval_manifest))), zero_shot_max_eval_clips, seed, strata
        )["row"].to_numpy()
        if len(zs_rows) < len(eval_manifest):
            print(
                f"zero-shot Whisper: {len(zs_rows)} of the {len(eval_manifest)} eval clips (zero_shot_max_eval_clips), "
                "stratified by label and source; the models are compared with it on these clips"
            )
        zero_shot_waves = load_eval_clips_at(eval_manifest, zs_rows, WHISPER_SAMPLE_RATE)  # Whisper's own rate
        heard = [i for i, wave in enumerate(zero_shot_waves) if wave is not None]  # a clip gone since: no answer
        with Stopwatch() as eval_time:
            answers, texts = zero_shot.predict_with_text(
                [zero_shot_waves[i] for i in heard], progress=True, sample_rate=WHISPER_SAMPLE_RATE
            )
        pred = np.full(len(zs_rows), None, dtype=object)
        pred[heard] = answers
        eval_predictions["zero_shot"] = pred
        eval_results["zero_shot"] = {
            **held_out_scores(y_eval[zs_rows], pred, groups[zs_rows]),
            "of_clips": len(eval_manifest),
            "seconds": eval_time.seconds,
            "answers_naming_several_digits": answers_naming_several_digits(texts),
        }
        zero_shot_results["eval_folder"] = eval_results["zero_shot"]
    eval_results["skipped_files"] = eval_skipped
    scored = {k: v for k, v in eval_results.items() if k != "skipped_files"}
    eval_table = pd.DataFrame(
        {
            k: {"accuracy": v["accuracy"], "ci95 low": v["ci95"][0], "ci95 high": v["ci95"][1], "n": v["n"]}
            for k, v in scored.items()
        }
    ).T.astype({"n": int})
    display(eval_table.round(4).rename_axis(f"eval_folder: {eval_folder}"))
    if "zero_shot" in eval_results and eval_results["zero_shot"].get("no_answer"):
        wrong = eval_results["zero_shot"]["n"] - eval_results["zero_shot"]["correct"]
        print(f"zero-shot: {eval_results['zero_shot']['no_answer']} of its {wrong} errors wrote no digit at all")
    per_group = pd.DataFrame({k: v["per_group_accuracy"] for k, v in scored.items()})
    if len(per_group) > 1:  # per source (voice, microphone, speaker): the weakest first
        clips_of = eval_manifest["source"].astype(str).value_counts()
        from_names = (eval_manifest["source_from"] == "file name").all()
        kind = "speakers named in the file names" if from_names else "sub-folders"
        enough = clips_of[clips_of >= 5].index  # a source of one or two clips says little on its own
        if len(enough) < 2:
            print(
                f"accuracy per source ({len(per_group)} {kind}): not ranked, fewer than 2 have 5 clips or more "
                "(all of them are in results.json, eval_folder.<model>.per_group_accuracy)"
            )
        else:
            shown = per_group.loc[enough]
            shown = shown.loc[shown.mean(axis=1).sort_values().index].assign(clips=clips_of)
            print(
                f"accuracy per source ({len(per_group)} {kind}), the 10 hardest for the models on average"
                + (f" among the {len(shown)} with at least 5 clips:" if len(shown) < len(per_group) else ":")
            )
            display(shown.head(10).round(3).rename_axis("source"))
else:
    eval_results = {"skipped": "no eval_folder given" if not eval_folder else "eval_folder had no readable clips"}
    print(
        f"{eval_results['skipped']}: this run has no cross-dataset check. Give a folder of digit clips recorded "
        "elsewhere (-p eval_folder DIR, or set eval_folder above) for the figure that says how the models do on "
        "other voices and microphones."
    )
update_results(out, eval_folder=eval_results, models=results_models, zero_shot=zero_shot_results)

# %% [markdown]
# ## Summary: every model against the zero-shot bar
#
# LOSO (mean and worst speaker) is the headline; `eval_folder` is the cross-dataset check;
# the official split is speaker-overlapping and only a secondary row. The best model is the
# trained model with the highest LOSO mean. The "each clip alone" columns score the same
# speaker-normalised models with every held-out or eval clip normalised on its own, mostly by
# the training statistics: what a user's first clip meets, before any of their speech is known.


# %%
def interval_text(ci):
    return "-" if not ci or ci[0] != ci[0] else f"{ci[0]:.3f}-{ci[1]:.3f}"


summary_rows = {}
for name, r in results_models.items():
    summary_rows[name] = {
        "LOSO mean": r.get("loso_mean_accuracy"),
        "LOSO 95% CI": interval_text(r.get("loso_ci95")),
        "LOSO min speaker": r.get("loso_min_accuracy"),
        "eval_folder": r.get("eval_folder_accuracy"),
        # speaker normalisation: the same models with each clip normalised alone (a user's first clip)
        "LOSO mean, each clip alone": loso_results.get(name, {}).get("each_clip_alone", {}).get("mean_accuracy"),
        "eval_folder, each clip alone": eval_results.get(name, {}).get("each_clip_alone_accuracy"),
        "official split (speaker-overlapping)": r.get("official_split_accuracy"),
        "fit s (features not included)": r.get("train_seconds"),
        "note": r.get("skipped", ""),
    }
if zero_shot_results.get("loso") or zero_shot_results.get("eval_folder"):
    summary_rows["zero-shot Whisper"] = {
        "LOSO mean": zero_shot_results.get("loso", {}).get("mean_accuracy"),
        "LOSO 95% CI": interval_text(zero_shot_results.get("loso", {}).get("ci95")),
        "LOSO min speaker": zero_shot_results.get("loso", {}).get("min_accuracy"),
        "eval_folder": zero_shot_results.get("eval_folder", {}).get("accuracy"),
        "official split (speaker-overlapping)": None,
        "fit s (features not included)": None,
        "note": f"no training; LOSO on {zero_shot_results.get('loso', {}).get('n', 0)} clips",
    }
ranked = sorted(
    [n for n in fitted if results_models[n].get("loso_mean_accuracy") is not None],
    key=lambda n: (results_models[n]["loso_mean_accuracy"], results_models[n]["loso_min_accuracy"]),
    reverse=True,
) or sorted(fitted, key=lambda n: results_models[n].get("official_split_accuracy") or 0, reverse=True)
best_name = ranked[0] if ranked else None
comparison = {}
loso_paired = eval_paired = None  # against the zero-shot bar on the same clips (McNemar: the clips only one gets right)
if best_name:
    best = results_models[best_name]
    if zero_shot_loso_predictions is not None and best_name in loso_predictions:
        at = pd.Index(loso_manifest.path).get_indexer(zero_shot_loso_predictions.index)
        truth = loso_manifest["label"].to_numpy()[at]
        loso_paired = paired_comparison(truth, loso_predictions[best_name][at], zero_shot_loso_predictions.to_numpy())
    if best_name in eval_predictions and "zero_shot" in eval_predictions:  # on the zero-shot's eval clips
        eval_paired = paired_comparison(
            y_eval[zs_rows], eval_predictions[best_name][zs_rows], eval_predictions["zero_shot"]
        )
    comparison = {
        "best_model": best_name,
        "loso_mean": best.get("loso_mean_accuracy"),
        "loso_min": best.get("loso_min_accuracy"),
        "eval_folder": best.get("eval_folder_accuracy"),
        "beats_zero_shot_on_loso": None
        if loso_paired is None
        else loso_paired["first_accuracy"] > loso_paired["second_accuracy"],
        "beats_zero_shot_on_eval_folder": None
        if eval_paired is None
        else eval_paired["first_accuracy"] > eval_paired["second_accuracy"],
        "loso_vs_zero_shot": loso_paired,  # on the zero-shot's LOSO clips (zero_shot_max_clips), each model's answer
        "eval_folder_vs_zero_shot": eval_paired,
    }
summary_table = pd.DataFrame(summary_rows).T
display(summary_table.style.format(precision=4, na_rep="-"))
if best_name:
    print(f"best trained model (highest LOSO mean): {best_name}")
for where, paired in (("held-out FSDD clips (LOSO)", loso_paired), ("eval_folder clips", eval_paired)):
    if best_name and paired is not None:
        verdict = "better" if paired["first_accuracy"] > paired["second_accuracy"] else "not better"
        significance = "beyond chance" if paired["mcnemar_p"] < 0.05 else "not beyond chance"
        print(
            f"  {best_name} vs zero-shot Whisper on the same {paired['n']} {where}: "
            f"{paired['first_accuracy']:.3f} vs {paired['second_accuracy']:.3f}; only {best_name} right on "
            f"{paired['only_first_right']}, only zero-shot on {paired['only_second_right']} "
            f"(McNemar p {paired['mcnemar_p']:.2g}): {verdict}, {significance}"
        )
if loso_predictions:  # every clip's held-out prediction per model, to look at the errors
    table = loso_manifest[["path", "speaker", "label"]].copy()
    for name, predicted in loso_predictions.items():
        table[name] = list(predicted)
    if zero_shot_loso_predictions is not None:
        table["zero_shot"] = table["path"].map(zero_shot_loso_predictions)
    atomic_write_text(out / "loso_predictions.csv", table.to_csv(index=False))
update_results(
    out,
    summary={name: {k: v for k, v in row.items() if v is not None and v == v} for name, row in summary_rows.items()},
    best_model=comparison,
)

# %% [markdown]
# ## Latency
#
# Milliseconds to classify one 1-second clip (features + model, encoder included), p50 and
# p95 over warm runs, in this process with `torch.get_num_threads()` threads on `device`.

# %%
latency = {}
if len(test_waves) or len(all_waves_list):
    source = test_waves[0] if len(test_waves) else all_waves_list[0]
    example = np.pad(source, (0, max(0, sample_rate - len(source))))[:sample_rate]
    for name, model in fitted.items():
        latency[name] = measure_latency(lambda w, m=model: m.predict([w]), example, runs=latency_runs)
        results_models[name]["latency_ms"] = latency[name]
    display(pd.DataFrame(latency).T.round(2))
update_results(
    out,
    models=results_models,
    latency={"device": device, "threads": torch.get_num_threads(), "clip_seconds": 1.0, **latency},
)

# %% [markdown]
# ## Saved models: reload and predict files
#
# Every model was saved under `models/`; `load_digit_model` reloads any of them (the
# scikit-learn file only after its signature checks out) and `predict_audio_files` predicts
# a file or a folder.

# %%
reload_check = {}
for name, path in [
    ("svm", models_dir / "svm.joblib"),
    ("cnn", models_dir / "cnn.pt"),
    ("encoder", models_dir / "encoder.pt"),
    ("wav2vec2", models_dir / "wav2vec2"),
]:
    if name not in fitted or not Path(path).exists():
        continue
    reloaded = load_digit_model(path, device="cpu", adapter=encoder_adapter if name == "encoder" else None)
    pool = list(test_manifest.path) if len(test_manifest) else list(all_manifest.path)
    # 50 clips drawn across the pool (the clips are sorted by label: the first 50 would be zeros and ones),
    # normalised by speaker as the evaluations are
    probe_paths = [pool[i] for i in np.random.default_rng(seed).permutation(len(pool))[:50]]
    probe, probe_groups = [wave_of[p] for p in probe_paths], [group_of[p] for p in probe_paths]
    agree = float(
        np.mean(reloaded.predict(probe, groups=probe_groups) == fitted[name].predict(probe, groups=probe_groups))
    )
    reload_check[name] = {
        "path": str(Path(path).relative_to(out)),
        "agreement_with_in_memory": agree,
        "probe_clips": len(probe),
    }
display(pd.DataFrame(reload_check).T)
if best_name and len(test_manifest):
    display(predict_audio_files(fitted[best_name], test_manifest["path"].iloc[0]))
update_results(out, saved_models=reload_check)

# %% [markdown]
# ## Streaming: one digit per speech segment
#
# The live recogniser gates audio with an energy VAD (RMS above `vad_threshold_rms` and above
# the tracked noise floor; segments end after `vad_hangover_ms` of silence and must last
# `vad_min_speech_ms`), then classifies each segment with `live_model`. In `continuous` mode
# a sliding window (`stream_window_ms`, every `stream_hop_ms`) classifies the open segment as
# it grows, and the windows and the whole segment are averaged into one digit per segment.
# A model with speaker normalisation sees each segment alone, normalised mostly by the
# training statistics (the summary's "each clip alone" columns measure that case).
#
# First a short demo of `stream_digits`; then a realistic test stream of `stream_test_digits`
# clips (from `eval_folder` when given, else the official test clips) at levels that change
# by 16 dB, with random pauses and LibriSpeech speech underneath as background noise, scored
# by segment-level precision and recall in toggle and continuous modes.

# %%
streaming = {}
stream_name = best_name if live_model == "best" else live_model
if stream_name not in fitted:
    print(f"live_model {live_model!r} was not trained here; using {best_name}")
    stream_name = best_name
vad_config = VadConfig(threshold_rms=vad_threshold_rms, min_speech_ms=vad_min_speech_ms, hangover_ms=vad_hangover_ms)


def make_recognizer(mode="toggle"):
    return StreamingDigitRecognizer(
        fitted[stream_name],
        vad_config,
        confidence_threshold=confidence_threshold,
        temperature=temperature,
        force_emit=force_emit,
        mode=mode,
        window_ms=stream_window_ms,
        hop_ms=stream_hop_ms,
    )


background, background_note = None, "LibriSpeech sample (background speech)"
if libri_manifest is not None:
    background, _ok, _failed = load_digit_waves(
        libri_manifest[libri_manifest["path"].isin(stream_background_paths)], sample_rate, False
    )
else:
    background_note = "no background: the LibriSpeech sample was not found"
if stream_name is not None:
    demo_source = [(d, test_waves[int(np.flatnonzero(y_test == d)[0])]) for d in stream_digits if (y_test == d).any()]
    pieces, demo_truth, cursor = [np.zeros(int(0.5 * sample_rate), np.float32)], [], 0.5
    for digit, wave in demo_source:
        level = 0.1 / (np.sqrt(np.mean(np.square(wave))) * 3 + 1e-9)
        pieces += [wave * level, np.zeros(int(0.6 * sample_rate), np.float32)]
        demo_truth.append({"digit": digit, "start_s": cursor, "end_s": cursor + len(wave) / sample_rate})
        cursor += len(wave) / sample_rate + 0.6
    recording = np.concatenate(pieces)
    recording += np.random.default_rng(seed).normal(0, 1e-3, len(recording)).astype(np.float32)
    demo = make_recognizer("continuous")
    events = stream_audio_file(recording, demo, chunk_ms=100, sample_rate=sample_rate)

    forced = json_plain([e["digit"] for e in events if e.get("forced")])  # labels as written, not np.int64(4)
    print(
        f"demo ({stream_name}, continuous): expected {json_plain([t['digit'] for t in demo_truth])}, "
        f"emitted {json_plain(list(demo.digits))}"
        + (f"; {forced} emitted below confidence_threshold {confidence_threshold} (force_emit)" if forced else "")
    )

    stream_pool = (eval_waves, list(y_eval)) if eval_folder and len(eval_waves) else (test_waves, list(y_test))
    stream_source = (
        "eval_folder clips (recorded elsewhere)"
        if eval_folder and len(eval_waves)
        else "official test clips (their speakers are in the training set: speaker-overlapping)"
    )
    test_stream, stream_truth = digit_test_stream(
        stream_pool[0], stream_pool[1], sample_rate, background=background, seed=seed, n_digits=stream_test_digits
    )
    for mode in ("toggle", "continuous"):
        recognizer = make_recognizer(mode)
        with Stopwatch() as stream_time:
            mode_events = stream_audio_file(test_stream, recognizer, chunk_ms=100, sample_rate=sample_rate)
        streaming[mode] = {
            **score_digit_stream(mode_events, stream_truth),
            "seconds": stream_time.seconds,
            "stream_seconds": len(test_stream) / sample_rate,
        }
    print(f"test stream: {stream_test_digits} digits from the {stream_source}")
    stream_table = pd.DataFrame({m: streaming[m] for m in ("toggle", "continuous")}).T.rename_axis(stream_name)
    display(stream_table.style.format(lambda v: f"{v:.0f}" if float(v).is_integer() else f"{v:.3f}"))

    fig, ax = plt.subplots(figsize=(11, 2.8))
    t = np.arange(len(recording)) / sample_rate
    ax.plot(t, recording, lw=0.4, color="grey")
    for truth in demo_truth:
        ax.axvspan(truth["start_s"], truth["end_s"], color="tab:green", alpha=0.15)
    for e in events:
        colour = "tab:orange" if e.get("forced") else ("tab:blue" if e["emitted"] else "tab:red")
        ax.axvspan(e["start_s"], e["end_s"], ymin=0.85, ymax=0.95, color=colour)
        ax.text(e["start_s"], 0.7 * np.abs(recording).max(), f"{e['digit']} ({e['confidence']:.2f})", fontsize=8)
    ax.set_xlabel("seconds")
    ax.set_ylabel("amplitude")
    ax.set_title(
        f"demo recording ({stream_name}): true digits (green); emitted segments: confident (blue), "
        f"forced below {confidence_threshold} (orange), rejected (red)",
        pad=12,
        fontsize=9,
    )
    save_figure(fig, out, "streaming_demo")
    plt.show()
    streaming.update(
        model=stream_name,
        demo={"expected": [t["digit"] for t in demo_truth], "emitted": demo.digits, "events": events},
        test_stream={
            "source": stream_source,
            "digits": stream_test_digits,
            "background": background_note,
            "level_db": [-28.0, -12.0],
        },
        vad=vad_config.__dict__,
        confidence_threshold=confidence_threshold,
        temperature=temperature,
        window_ms=stream_window_ms,
        hop_ms=stream_hop_ms,
    )
update_results(out, streaming=streaming)

# %% [markdown]
# ## Live microphone
#
# **Start listening** starts VAD-gated listening until **Stop** (toggle mode); **Push to
# talk** records one utterance: click, say a digit, click **Done**. Each emitted digit shows
# with its confidence. Without a microphone (Colab, a server, no PortAudio) the panel says
# why instead.

# %%
if stream_name is not None:
    display(live_digit_widget(make_recognizer("toggle")))

# %%
total_seconds = time.perf_counter() - notebook_start
update_results(
    out,
    timings={
        "total_seconds": total_seconds,
        "device": device,
        "threads": torch.get_num_threads(),
        **timings,
        **{f"{k}_train": v.get("train_seconds") for k, v in results_models.items()},
        **{f"loso_{k}": v.get("seconds") for k, v in loso_results.items() if isinstance(v, dict)},
    },
)
print(f"done in {total_seconds / 60:.1f} min; results in {out / 'results.json'}")
