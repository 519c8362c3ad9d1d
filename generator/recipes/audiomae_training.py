# %% [markdown]
# # AudioMAE++: self-supervised pretraining and fine-tuning
#
# Pretrain an AudioMAE++ encoder (a ViT over log-mel patches with Macaron blocks, SwiGLU and
# rotary positions) by masking 80 % of the patches and reconstructing them, then measure what
# pretraining bought: linear-probe and fine-tune accuracy of the pretrained encoder against the
# **same architecture at its random initialisation**, on the same split. Runs on a CPU, a GPU
# (mixed precision) or several GPUs (`torchrun -m scripts.mae_torchrun`, see the end).
#
# Defaults: ESC-50 (downloaded on demand), test fold 1. Set `dataset = "fsdd"` for spoken
# digits, or `dataset = "folder"` with `data_path` and `labels_csv` for your own clips.
# Models, data sources and transforms come from registries (`MAE_MODELS`, `MAE_DATA_SOURCES`,
# `MAE_TRANSFORMS`): register your own with a decorator and name it here.
# Checkpoints (`checkpoint_dir/last.pt`) are validated on load, and re-running the notebook
# resumes pretraining from the last finished epoch when the checkpoint was trained on the same
# data with the same settings (it records them; a difference stops the run with the list,
# `resume = "force"` continues anyway); `resume = False` moves an old checkpoint aside.
#
# The defaults (tiny: 12 layers, 4 x 384 decoder, 2-s inputs, 40 epochs) are sized for a GPU.
# On a CPU, a few minutes of pretraining already show the effect in the linear probe (fine-tuned,
# a small model on FSDD reaches the same accuracy from either start) with a smaller model, e.g.
# `dataset="fsdd"`, `max_train_clips=1000`, `frames=64`, `pretrain_epochs=8`,
# `model_overrides={"depth": 4, "decoder_dim": 192, "decoder_depth": 2, "decoder_heads": 3}`.

# %% tags=["parameters"]
data_path = None  # [path] data set folder; None: $AUDIOLENS_DATA, data/, then download
dataset = "esc50"  # [str] registered data source: "esc50", "fsdd" or "folder" (data_path + labels_csv)
labels_csv = None  # [path] folder data sets: CSV with filename and label columns, optionally split or fold
test_fold = 1  # [int 1..] ESC-50 (folds 1-5, or a folder with a fold column): the fold held out for testing
fsdd_test_speakers = 2  # [int 0..5] FSDD: speakers held out as the test set; 0: the official split (shared)
output_dir = "runs/audiomae_training/latest"  # [str] results.json, figures and (by default) checkpoints go here
seed = 0  # [int 0..] random seed (data subsets, initial weights, masks)
model_name = "audiomae++"  # [str] registered model: "audiomae++" or the plain "vit_mae" baseline
size = "tiny"  # [tiny|small|base] 192, 384 or 768 wide; 12 layers each
model_overrides = {}  # [dict] any model config key, e.g. {"depth": 4, "decoder_dim": 192}
use_rope = True  # [bool] rotary position embeddings (False: fixed 2-D sine-cosine)
mask_ratio = 0.8  # [float 0.05..0.95] fraction of patches hidden during pretraining
sample_rate = 16000  # [int 1000..] audio is resampled to this rate
n_mels = 80  # [int 16..] mel bins (multiple of 16)
frames = 200  # [int 4..] 10 ms frames per clip, a multiple of 4 (200 frames: 2 s)
max_train_clips = None  # [int 1..] cap on training clips, stratified (None: all)
max_test_clips = None  # [int 1..] cap on test clips, stratified (None: all)
pretrain_epochs = 40  # [int 0..] masked pretraining epochs in all, resumed ones included (0: none)
batch_size = 32  # [int 1..] clips per step
pretrain_lr = 1e-3  # [float 1e-8..1] peak learning rate (AdamW, warmup then cosine)
warmup_epochs = 2  # [float 0..] linear warmup
probe_epochs = 100  # [int 1..] linear-probe epochs (on cached embeddings: cheap)
probe_lr = 1e-2  # [float 1e-8..10] linear-probe learning rate
finetune_epochs = 10  # [int 1..] full fine-tuning epochs, for each of the two encoders
finetune_lr = 5e-4  # [float 1e-8..1] fine-tuning learning rate of the head (encoder layers: layer-wise decay)
finetune_layer_decay = 0.75  # [float 0.01..1] pretrained encoder: layer i of L learns at lr * decay ** (L + 1 - i)
finetune_from_probe = True  # [bool] LP-FT: fine-tuning starts from the linear probe's head
finetune_augment = "patch_drop"  # [patch_drop|specaugment|none] fine-tuning: drop patches (AudioMAE), or SpecAugment
finetune_patch_drop = 0.3  # [0..0.9] with patch_drop: share of each clip's patches dropped per step
pooling = "mean"  # [mean|cls] clip embedding: mean of patch tokens or the CLS token
checkpoint_dir = None  # [str] None: <output_dir>/checkpoints
resume = True  # [True|False|force] continue last.pt if trained alike; force: even if not; False: move it aside
cache_dir = None  # [str] log-mel cache; None: <output_dir>/cache
device = "auto"  # [auto|cpu|cuda|mps] where to train
cpu_threads = None  # [int 1..] CPU threads for torch and BLAS (None: the defaults; 1 is fastest on a busy machine)
amp = True  # [bool] mixed precision on CUDA
n_reconstructions = 4  # [int 0..] test clips shown as input / masked / reconstruction
# %%
import copy
import os
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch
from sklearn.decomposition import PCA

from lib.core.accuracy import paired_comparison
from lib.core.audio import audio_info, load_audio
from lib.core.outputs import Stopwatch, prepare_output_dir, save_figure, update_results
from lib.core.runtime import limit_cpu_threads, pick_device, seed_everything
from lib.core.subsets import find_group_column, stratified_subset
from lib.mae.audiomae import AudioMaeClassifier, build_audiomae_model
from lib.mae.mae_checkpoints import load_audiomae_encoder, load_mae_checkpoint
from lib.mae.mae_data import build_mae_data_source, mae_load_split
from lib.mae.mae_registry import MAE_DATA_SOURCES, MAE_MODELS, MAE_TRANSFORMS
from lib.mae.mae_training import (
    mae_constant_patch_share,
    mae_evaluate,
    mae_extract_embeddings,
    mae_pretrain,
    mae_train_classifier,
)
from lib.mae.mae_transforms import build_mae_transform

seed_everything(seed)
out = prepare_output_dir(output_dir)
device = pick_device(device)
limit_cpu_threads(cpu_threads)
checkpoint_dir = Path(checkpoint_dir) if checkpoint_dir else out / "checkpoints"
cache_dir = Path(cache_dir) if cache_dir else out / "cache"
print(
    f"device {device}; registered models {MAE_MODELS.names()}, data sources {MAE_DATA_SOURCES.names()}, "
    f"transforms {MAE_TRANSFORMS.names()}"
)

# %% [markdown]
# ## Data
#
# The data source gives one manifest with a train/test split; clips are turned into
# normalised log-mels (cached as `.npy`). Clips that cannot be loaded are skipped and listed.
# Pretraining uses only the training split; the test split is never seen before evaluation.

# %%
source = build_mae_data_source(
    dataset, path=data_path, labels_csv=labels_csv, test_fold=test_fold, test_speakers=fsdd_test_speakers, seed=seed
)
manifest = source.manifest()
class_names = source.class_names
train_frame = stratified_subset(manifest[manifest.split == "train"], max_train_clips, seed)
test_frame = stratified_subset(manifest[manifest.split == "test"], max_test_clips, seed)
transform = build_mae_transform("log_mel", sample_rate=sample_rate, n_mels=n_mels, frames=frames)
in_memory = (len(train_frame) + len(test_frame)) * int(np.prod(transform.output_shape)) * 4 / 2**30
if in_memory > 2:  # a large folder (Speech Commands' 105,829 clips: 6.3 GiB at the defaults) held as float32
    print(
        f"{len(train_frame) + len(test_frame)} clips: their log-mels take about {in_memory:.1f} GiB of memory (and "
        "each epoch sees them all); cap them with max_train_clips / max_test_clips"
    )
with Stopwatch() as feature_watch:
    train_data = mae_load_split(train_frame, transform, cache_dir=cache_dir, desc="log-mel train")
    test_data = mae_load_split(test_frame, transform, cache_dir=cache_dir, desc="log-mel test")
failures = train_data["failures"] + test_data["failures"]
print(
    f"{dataset}: {len(train_data['x'])} train / {len(test_data['x'])} test clips, {len(class_names)} classes, "
    f"input {transform.output_shape}; {len(failures)} skipped"
)
# who the test clips come from: a split whose speakers (or source recordings) are also in training measures
# recognising known voices as much as the classes
group_col = source.group_column or find_group_column(manifest, min_values=1)  # the split's groups first
shared_groups = (
    sorted(set(train_frame[group_col].astype(str)) & set(test_frame[group_col].astype(str))) if group_col else None
)
if shared_groups:
    print(
        f"the test split is {group_col}-overlapping: {len(shared_groups)} of its "
        f"{test_frame[group_col].nunique()} {group_col}s are in the training clips too"
        + (
            " (FSDD's official split, fsdd_test_speakers=0: other takes by the same speakers)"
            if dataset == "fsdd"
            else ""
        )
        + ", so the accuracies below are not on new ones"
    )
elif group_col:
    print(f"no {group_col} of the test clips is in the training clips")
update_results(
    out,
    data={
        "dataset": dataset,
        "test_fold": getattr(source, "test_fold", None),
        "held_out_speakers": getattr(source, "held_out_speakers", None) or None,
        "n_train": len(train_data["x"]),
        "n_test": len(test_data["x"]),
        "n_classes": len(class_names),
        "input_shape": list(transform.output_shape),
        "skipped_clips": failures,
        "feature_seconds": feature_watch.seconds,
        "group_column": group_col,
        "test_groups_also_in_training": None if shared_groups is None else len(shared_groups),
    },
)

# %% [markdown]
# ## Masked pretraining
#
# The randomly initialised encoder is kept aside (an exact copy of the starting weights) as
# the baseline every downstream number is compared with. The share of constant patches (the
# padding after a short clip, silence at the log-mel floor: an all-zero target after per-patch
# normalisation) is printed and saved (`pretrain.constant_patch_share`). As in AudioMAE they
# count in the loss; `model_overrides={"loss_on_constant_patches": False}` leaves them out. On
# FSDD at 64 frames (39% constant; the README's CPU command) that made the encoder worse: linear
# probe 0.441 and fine-tune 0.634 without them, 0.475 and 0.665 with them (random init 0.429 /
# 0.682): reconstructing the padding teaches where a word ends, and a word's length is a cue.

# %%
seed_everything(seed)
model = build_audiomae_model(
    model_name,
    size,
    input_size=(n_mels, frames),
    use_rope=use_rope,
    mask_ratio=mask_ratio,
    pooling=pooling,
    **model_overrides,
)
random_model = copy.deepcopy(model)
n_params = sum(p.numel() for p in model.parameters())
c = model.config
shape = [
    f"{label} {c[key]}"
    for label, key in (
        ("depth", "depth"),
        ("width", "embed_dim"),
        ("heads", "num_heads"),
        ("blocks", "block"),
        ("RoPE", "use_rope"),
        ("decoder depth", "decoder_depth"),
        ("decoder width", "decoder_dim"),
        ("patch", "patch_size"),
        ("input", "input_size"),
        ("mask ratio", "mask_ratio"),
    )
    if key in c
]
print(f"{model_name} {size}: {n_params / 1e6:.2f} M parameters; " + ", ".join(shape))
constant_share = mae_constant_patch_share(model, train_data["x"])
if constant_share is not None:
    counted = "count in" if model.config.get("loss_on_constant_patches", True) else "are left out of"
    print(
        f"{constant_share:.1%} of the training patches are constant (padding after short clips, silence at the "
        f"floor): they {counted} the reconstruction loss"
    )
history = mae_pretrain(
    model,
    train_data["x"],
    epochs=pretrain_epochs,
    batch_size=batch_size,
    lr=pretrain_lr,
    warmup_epochs=warmup_epochs,
    device=device,
    amp=amp,
    checkpoint_dir=checkpoint_dir,
    resume=resume,
    seed=seed,
    transform_config=transform.config,
)
epochs_this_run = len(history["clips_per_second"]) - history["start_epoch"]
pretrained = len(history["loss"]) > 0
if not pretrained:
    print(
        "No pretraining: pretrain_epochs is 0 and there is no checkpoint to resume, so the 'pretrained' "
        "encoder below is the random initialisation."
    )


def clips_per_second(rates, seconds) -> float:
    """Clips over all the epochs divided by their seconds (not the mean of per-epoch rates)."""
    return float(np.average(rates, weights=seconds))


if epochs_this_run > 0:
    start = history["start_epoch"]
    train_throughput = clips_per_second(history["clips_per_second"][start:], history["seconds"][start:])
else:  # nothing trained now: the throughput recorded in the checkpoint, if any
    train_throughput = clips_per_second(history["clips_per_second"], history["seconds"]) if pretrained else float("nan")
update_results(
    out,
    pretrain={
        "model": model_name,
        "size": size,
        "parameters": n_params,
        "config": model.config,
        "loss": getattr(model, "pretrain_loss", None),
        "constant_patch_share": constant_share,
        "loss_per_epoch": history["loss"],
        "lr_per_epoch": history["lr"],
        "start_epoch": history["start_epoch"],
        "epochs": len(history["loss"]),
        "training_skipped": history["skipped"],
        "resume": resume,
        "old_checkpoint_moved_to": history["moved_aside"],
        "train_clips_per_second": train_throughput,
        "checkpoint": str(checkpoint_dir / "last.pt") if pretrained else None,
    },
)

if pretrained:
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(range(1, len(history["loss"]) + 1), history["loss"], marker="o")
    ax.set(
        xlabel="epoch",
        ylabel="masked-patch MSE (normalised)",
        title=f"{model_name} {size} {model_overrides or ''} pretraining loss".replace("  ", " "),
    )
    ax.grid(alpha=0.3)
    save_figure(fig, out, "pretrain_loss")
    plt.show()

# %% [markdown]
# ## What the decoder reconstructs
#
# For test clips of different classes: the log-mel input, what the encoder sees (hidden
# patches in grey), and the reconstruction (visible patches copied, hidden ones predicted).
# Per-patch normalised predictions are mapped back with each patch's own mean and spread.

# %%
model.eval()
torch.manual_seed(seed)
# one clip from each of the first classes (then more clips when there are fewer classes)
_, first_of_class = np.unique(test_data["y"], return_index=True)
show = list(first_of_class) + [i for i in range(len(test_data["y"])) if i not in set(first_of_class)]
show = sorted(show[:n_reconstructions], key=lambda i: test_data["y"][i])
n_show = len(show)
if n_show:
    with torch.no_grad():
        specs = torch.from_numpy(test_data["x"][show]).to(device)
        masked, recon, hidden = model.reconstruct(specs)
    masked = masked.masked_fill(hidden.bool(), float("nan"))  # hidden patches drawn in grey
    cmap = plt.get_cmap("magma").copy()
    cmap.set_bad("lightgrey")
    fig, axes = plt.subplots(n_show, 3, figsize=(12, 2.2 * n_show), squeeze=False)
    for row in range(n_show):
        label = class_names[test_data["y"][show[row]]]
        for col, (image, title) in enumerate(
            ((specs, "input"), (masked, f"masked {mask_ratio:.0%}"), (recon, "reconstruction"))
        ):
            axes[row, col].imshow(
                image[row, 0].float().cpu().numpy(),
                origin="lower",
                aspect="auto",
                interpolation="nearest",
                cmap=cmap,
                vmin=-2,
                vmax=2,
            )
            axes[row, col].set_title(f"class {label}: {title}", fontsize=9)
            axes[row, col].set_xticks([])
            axes[row, col].set_yticks([])
    fig.tight_layout()
    save_figure(fig, out, "reconstructions")
    plt.show()

# %% [markdown]
# ## Embeddings and linear probe
#
# `encode(batch) -> [N, D]`: mean-pooled (or CLS) tokens of the unmasked input. A linear
# probe (batch norm without parameters + linear layer, encoder frozen) measures how much
# class information the embeddings carry, for the pretrained and the random encoder.

# %%
embeddings, embed_throughput = mae_extract_embeddings(model, test_data["x"], device=device)
print(f"embeddings {embeddings.shape}, {embed_throughput:.1f} clips/s")
probe, probe_heads = {}, {}
for name, encoder in (("pretrained", model), ("random_init", random_model)):
    seed_everything(seed)
    classifier = AudioMaeClassifier(copy.deepcopy(encoder), len(class_names), pooling=pooling, freeze_encoder=True)
    probe_heads[name] = classifier.head
    mae_train_classifier(
        classifier,
        train_data["x"],
        train_data["y"],
        epochs=probe_epochs,
        batch_size=256,
        lr=probe_lr,
        weight_decay=1e-4,
        warmup_epochs=0,
        label_smoothing=0.0,
        device=device,
        seed=seed,
    )
    probe[name] = mae_evaluate(classifier, test_data["x"], test_data["y"], class_names, device=device)
    print(f"linear probe, {name}: test accuracy {probe[name]['accuracy']:.3f}")
update_results(
    out,
    embeddings={"shape": list(embeddings.shape), "clips_per_second": embed_throughput},
    linear_probe={name: r["accuracy"] for name, r in probe.items()},
    linear_probe_details={
        name: {
            "ci95": r["ci95"],
            "per_class_accuracy": r["per_class_accuracy"],
            "confusion_matrix": r["confusion_matrix"],
        }
        for name, r in probe.items()
    },
    throughput={
        "pretrain_clips_per_second": train_throughput,
        "embedding_clips_per_second": embed_throughput,
        "device": device,
    },
)

# %% [markdown]
# The test-set embeddings of both encoders on their first two principal components,
# coloured by class. The top components show the largest variation in the embeddings, which
# need not be the class (on FSDD it is often the speaker); the linear probe above measures
# how separable the classes are in all D dimensions.

# %%
random_embeddings, _ = mae_extract_embeddings(random_model, test_data["x"], device=device)
if len(embeddings) >= 3:
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.5))
    for ax, (name, emb) in zip(axes, (("pretrained", embeddings), ("random_init", random_embeddings))):
        points = PCA(n_components=2, random_state=seed).fit_transform(emb)
        scatter = ax.scatter(
            points[:, 0],
            points[:, 1],
            c=test_data["y"],
            cmap="tab10" if len(class_names) <= 10 else "nipy_spectral",
            s=10,
        )
        ax.set(title=f"{name}: linear probe {probe[name]['accuracy']:.2f}", xlabel="PC 1", ylabel="PC 2")
    if len(class_names) <= 10:
        axes[1].legend(scatter.legend_elements()[0], class_names, fontsize=7, loc="best", title="class")
    save_figure(fig, out, "embedding_pca")
    plt.show()

# %% [markdown]
# ## Fine-tuning
#
# The whole encoder plus the head, trained on the labels (label smoothing), again from the
# pretrained and from the random weights. The augmentation drops a share of each clip's
# patches (`finetune_augment="patch_drop"`), as AudioMAE fine-tunes: the encoder sees visible
# subsets as in pretraining, so the probe's head still fits its embeddings. SpecAugment bands
# (`"specaugment"`) move the embeddings so far that short fine-tuning undoes the probe. In
# development runs (not this one; scored on FSDD's speaker-overlapping test clips, the only
# split there was, so read them as indications: a 3-epoch difference of 9 clips is within noise;
# 400 training clips of 1 s, depth 4, 4 pretraining epochs, 300 test clips), 3 epochs from
# the probe's 0.75 ended at 0.72 with SpecAugment and 0.75 with patch dropping (random
# weights: 0.71 to 0.59 and to 0.70); after 10 epochs the two are within noise (0.90 and
# 0.88), and with the CPU setting above both reach 0.987. A step with dropped patches is also
# about 1.3x cheaper. With `finetune_from_probe`
# the head starts from the linear probe (LP-FT, Kumar et al. 2022), which keeps the first
# updates from distorting the pretrained features. The pretrained encoder uses layer-wise
# learning-rate decay (as MAE fine-tuning does); the random encoder trains all layers at the
# full rate, since it has nothing to preserve.

# %%
finetune, finetune_history = {}, {}
for name, encoder in (("pretrained", model), ("random_init", random_model)):
    seed_everything(seed)
    classifier = AudioMaeClassifier(copy.deepcopy(encoder), len(class_names), pooling=pooling)
    if finetune_from_probe:  # LP-FT: start from the linear probe's head
        classifier.head.load_state_dict(probe_heads[name].state_dict())
    finetune_history[name] = mae_train_classifier(
        classifier,
        train_data["x"],
        train_data["y"],
        epochs=finetune_epochs,
        batch_size=batch_size,
        lr=finetune_lr,
        device=device,
        amp=amp,
        seed=seed,
        warmup_epochs=0 if finetune_from_probe else 1,
        layer_decay=finetune_layer_decay if name == "pretrained" else 1.0,
        augment=finetune_augment,
        patch_drop=finetune_patch_drop,
    )
    finetune[name] = mae_evaluate(classifier, test_data["x"], test_data["y"], class_names, device=device)
    change = finetune[name]["accuracy"] - probe[name]["accuracy"]
    print(
        f"fine-tune, {name}: test accuracy {finetune[name]['accuracy']:.3f} ({change:+.3f} against its linear probe"
        + ("; below the probe: more epochs, or the probe's head is the better model" if change < 0 else "")
        + ")"
    )
update_results(
    out,
    finetune={name: r["accuracy"] for name, r in finetune.items()},
    finetune_details={
        name: {
            "ci95": r["ci95"],
            "per_class_accuracy": r["per_class_accuracy"],
            "confusion_matrix": r["confusion_matrix"],
            "loss_per_epoch": finetune_history[name]["loss"],
            "train_clips_per_second": finetune_history[name]["clips_per_second"],
            "change_against_probe": r["accuracy"] - probe[name]["accuracy"],
        }
        for name, r in finetune.items()
    },
    finetune_config={"augment": finetune_augment, "patch_drop": finetune_patch_drop, "from_probe": finetune_from_probe},
    # clips per second depend on what else ran on the machine
    load_average_after_finetune=os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
)

fig, axes = plt.subplots(1, 2, figsize=(12, 3.5))
for name, hist in finetune_history.items():
    axes[0].plot(range(1, len(hist["loss"]) + 1), hist["loss"], marker="o", label=name)
axes[0].set(xlabel="epoch", ylabel="cross-entropy", title="fine-tuning loss")
axes[0].legend()
axes[0].grid(alpha=0.3)
names = ["linear probe", "fine-tune"]
for i, (name, color) in enumerate((("pretrained", "C0"), ("random_init", "C1"))):
    values = [probe[name]["accuracy"], finetune[name]["accuracy"]]
    axes[1].bar(np.arange(2) + 0.38 * i, values, width=0.38, color=color, label=name)
    for j, v in enumerate(values):
        axes[1].text(j + 0.38 * i, v + 0.01, f"{v:.2f}", ha="center", fontsize=8)
axes[1].axhline(1 / len(class_names), color="gray", linestyle="--", label="chance")
axes[1].set_xticks(np.arange(2) + 0.19, names)
axes[1].set(ylabel="test accuracy", ylim=(0, 1.05), title="pretrained vs random initialisation")
axes[1].legend(fontsize=8)
save_figure(fig, out, "finetune_and_accuracy")
plt.show()

matrix = np.array(finetune["pretrained"]["confusion_matrix"])
fig, ax = plt.subplots(figsize=(min(14, 3 + 0.3 * len(class_names)),) * 2)
ax.imshow(matrix, cmap="Blues")
if len(class_names) <= 20:
    for i in range(len(class_names)):
        for j in range(len(class_names)):
            if matrix[i, j]:
                ax.text(
                    j,
                    i,
                    matrix[i, j],
                    ha="center",
                    va="center",
                    fontsize=8,
                    color="white" if matrix[i, j] > matrix.max() / 2 else "black",
                )
ax.set_xticks(range(len(class_names)), class_names, rotation=90, fontsize=7)
ax.set_yticks(range(len(class_names)), class_names, fontsize=7)
ax.set(
    xlabel="predicted",
    ylabel="true",
    title=f"fine-tuned pretrained encoder: accuracy {finetune['pretrained']['accuracy']:.3f}",
)
save_figure(fig, out, "confusion_matrix")
plt.show()

# %% [markdown]
# ## The checkpoint, reloaded
#
# `load_audiomae_encoder` rebuilds the model from the checkpoint's own config after
# validating it, and embeds raw waveforms (resampling, log-mel and padding done inside): the
# embeddings must equal those of the model in memory.

# %%
checkpoint_path = checkpoint_dir / "last.pt"
if pretrained:
    encoder = load_audiomae_encoder(checkpoint_path, device=device)
    checkpoint = load_mae_checkpoint(checkpoint_path)
    n_check = min(8, len(test_data["paths"]))
    waves = [load_audio(p, sr=None) for p in test_data["paths"][:n_check]]
    rates = [audio_info(p)["sample_rate"] for p in test_data["paths"][:n_check]]
    reloaded = np.concatenate([encoder.embed([w], r) for w, r in zip(waves, rates)]) if n_check else embeddings[:0]
    round_trip_error = float(np.abs(reloaded - embeddings[:n_check]).max()) if n_check else float("nan")
    print(
        f"checkpoint {checkpoint_path} (sha256 {encoder.checkpoint_hash[:12]}..., epoch {checkpoint['epoch'] + 1}): "
        f"embeddings {reloaded.shape}, max difference from the in-memory model {round_trip_error:.2e}"
    )
    update_results(
        out,
        checkpoint={
            "path": str(checkpoint_path),
            "sha256": encoder.checkpoint_hash,
            "epochs_done": int(checkpoint["epoch"]) + 1,  # the checkpoint's own "epoch" counts from 0
            "embedding_dim": encoder.embedding_dim,
            "round_trip_max_abs_diff": round_trip_error,
        },
    )
else:
    print(f"No checkpoint to reload: nothing was pretrained, so {checkpoint_path} was not written.")
    update_results(out, checkpoint={"path": None, "note": "pretrain_epochs 0 and no checkpoint: nothing saved"})


# %% [markdown]
# ## Summary, and scaling out
#
# To pretrain on several GPUs, run the same loop under `torchrun` from a checkout of the
# repository; it writes the same validated `last.pt`, which this notebook resumes from
# (`checkpoint_dir`) or `load_audiomae_encoder` loads:
#
# ```bash
# torchrun --nproc_per_node=4 -m scripts.mae_torchrun --dataset esc50 --size base --epochs 100 \
#     --batch-size 64 --checkpoint-dir checkpoints/audiomae
# ```

# %%
summary = {
    "linear_probe": {k: v["accuracy"] for k, v in probe.items()},
    "finetune": {k: v["accuracy"] for k, v in finetune.items()},
    "pretrain_loss_first_last": [history["loss"][0], history["loss"][-1]] if pretrained else None,
    "chance": 1 / len(class_names),
    "test_clips": len(test_data["y"]),
    "pretrained_vs_random": {},
}
print(f"{len(test_data['y'])} test clips, chance {1 / len(class_names):.3f}; accuracy [Wilson 95% interval]")
for stage, results_of in (("linear_probe", probe), ("finetune", finetune)):
    a, b = results_of["pretrained"], results_of["random_init"]
    # the same clips for both encoders: McNemar's test on the clips only one of them gets right
    compared = paired_comparison(test_data["y"], a["predicted"], b["predicted"])
    summary["pretrained_vs_random"][stage] = compared
    verdict = "a difference beyond chance" if compared["mcnemar_p"] < 0.05 else "no difference beyond chance"
    print(
        f"  {stage}: pretrained {a['accuracy']:.3f} [{a['ci95'][0]:.3f}, {a['ci95'][1]:.3f}] vs random init "
        f"{b['accuracy']:.3f} [{b['ci95'][0]:.3f}, {b['ci95'][1]:.3f}]; clips only one gets right "
        f"{compared['only_first_right']} / {compared['only_second_right']}, McNemar p {compared['mcnemar_p']:.2g}: "
        f"{verdict}"
    )
update_results(out, summary=summary)
