# %% [markdown]
# # Tier 1 data: windows over utterances, streamed part by part, sharded over workers and ranks
#
# Exp 1 learns `p(x[t+k] - x[t] | x[t-W+1..t])` from the latent frames Phase 0 stores. A
# **source** gives utterances without loading everything: `Tier1StoreSource` reads a Phase 0
# latent store one *part* (a chunk of utterances, the store's unit of resumption) at a time,
# memory-mapped; `Tier1ArraySource` wraps in-memory arrays (planted data, tests). Both expose
# `table` (one row per utterance: unit, utterance, speaker, split, frames) without touching
# the latents, so eval samples can be planned before anything is read.
#
# `Tier1WindowDataset` is an `IterableDataset`: each (rank, DataLoader worker) pair owns the
# parts `i % shards == shard` (or, with fewer parts than shards, the utterances
# `i % shards == shard`), reads them in a seeded order, cuts every utterance into windows,
# shuffles windows in a buffer and yields ready batches. In training it cycles forever
# (epochs reseeded); `skip_batches` fast-forwards a resumed run to the batch it stopped at.
#
# **Scaling.** Context frames are standardised per dimension with train-speaker statistics;
# targets (deltas) are divided by a per-horizon scale (`per_dim`: each dimension's RMS;
# `global`: one RMS for all dimensions, which keeps directions unchanged; `none`), never
# centred, so that "no movement" stays the zero vector the vMF direction is measured from.

# %%
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from lib.core.distributed import distributed_shard_id
from lib.phase0.phase0_latents import phase0_store_parts, read_phase0_part
from lib.phase0.tier1_vmf import vmf_lognormal_sample


class Tier1StoreSource:
    """Utterances of a Phase 0 latent store, read one part at a time (memory-mapped)."""

    def __init__(self, store_dir, split_of: dict | None = None):
        self.store_dir = str(store_dir)
        self.header, self.parts = phase0_store_parts(store_dir)
        self.encoder = dict(self.header["encoder"])
        self.dim = int(self.encoder["dim"])
        self.frame_rate = float(self.encoder["frame_rate"])
        rows = []
        for unit, paths in enumerate(self.parts):
            index = pd.read_parquet(paths["index"], columns=None)
            index = index[index["frames"] > 0]
            for record in index.itertuples(index=False):
                rows.append(
                    {
                        "unit": unit,
                        "utterance": str(record.utterance),
                        "speaker": str(record.speaker),
                        "split": str(getattr(record, "split", "train")),
                        "frames": int(record.frames),
                    }
                )
        self.table = pd.DataFrame(rows, columns=["unit", "utterance", "speaker", "split", "frames"])
        if split_of is not None:
            self.table["split"] = self.table["utterance"].map(split_of).fillna("unused")
        self.n_units = len(self.parts)
        self.fingerprint = f"{self.header.get('store_key')}:{self.encoder.get('fingerprint')}"
        self.split_of = dict(zip(self.table["utterance"], self.table["split"]))

    def load(self, unit: int) -> list:
        index, latents, energy = read_phase0_part(self.parts[unit])
        split_of = self.split_of
        out = []
        for record in index.itertuples(index=False):
            start, stop = int(record.offset), int(record.offset) + int(record.frames)
            out.append(
                {
                    "utterance": str(record.utterance),
                    "speaker": str(record.speaker),
                    "split": split_of.get(str(record.utterance), "unused"),
                    "latents": np.asarray(latents[start:stop], dtype=np.float32),
                    "energy": np.asarray(energy[start:stop], dtype=np.float32),
                }
            )
        return out


class Tier1ArraySource:
    """In-memory utterances (``[{utterance, speaker, split, latents [T, D], energy [T]}]``), grouped in units."""

    def __init__(self, utterances: list, per_unit: int = 8, name: str = "arrays"):
        self.utterances = utterances
        self.per_unit = int(per_unit)
        self.dim = int(utterances[0]["latents"].shape[1])
        self.frame_rate = 12.5
        self.n_units = int(np.ceil(len(utterances) / self.per_unit))
        self.encoder = {"encoder": name, "family": name, "dim": self.dim, "frame_rate": self.frame_rate}
        self.table = pd.DataFrame(
            [
                {
                    "unit": i // self.per_unit,
                    "utterance": u["utterance"],
                    "speaker": u["speaker"],
                    "split": u["split"],
                    "frames": len(u["latents"]),
                }
                for i, u in enumerate(utterances)
            ]
        )
        self.fingerprint = f"{name}:{len(utterances)}:{self.dim}"

    def load(self, unit: int) -> list:
        items = self.utterances[unit * self.per_unit : (unit + 1) * self.per_unit]
        return [{**u, "energy": u.get("energy", np.zeros(len(u["latents"]), np.float32))} for u in items]


def tier1_source_arrays(source, splits=("train", "eval")) -> tuple:
    """``(index, latents, energy)`` of ``splits``' utterances concatenated in memory (Phase 0's layout:
    ``index`` has utterance, speaker, split, frames, offset)."""
    records, blocks, energies, offset = [], [], [], 0
    for unit in range(source.n_units):
        for item in source.load(unit):
            if item["split"] not in splits:
                continue
            n = len(item["latents"])
            records.append(
                {
                    "utterance": item["utterance"],
                    "speaker": item["speaker"],
                    "split": item["split"],
                    "frames": n,
                    "offset": offset,
                }
            )
            blocks.append(item["latents"])
            energies.append(item["energy"])
            offset += n
    return pd.DataFrame(records), np.concatenate(blocks), np.concatenate(energies)


# %% [markdown]
# ## Scaling fitted on train speakers


# %%
@dataclass
class Tier1Scaling:
    """Input standardisation (``latent_mean/std [D]``) and target scales (``delta_scale [K, D]``)."""

    latent_mean: np.ndarray
    latent_std: np.ndarray
    delta_scale: np.ndarray
    horizons: list
    mode: str
    frames: int = 0

    def to_dict(self) -> dict:
        return {
            "latent_mean": self.latent_mean.tolist(),
            "latent_std": self.latent_std.tolist(),
            "delta_scale": self.delta_scale.tolist(),
            "horizons": list(self.horizons),
            "mode": self.mode,
            "frames": int(self.frames),
        }

    @classmethod
    def from_dict(cls, d: dict) -> "Tier1Scaling":
        return cls(
            np.asarray(d["latent_mean"], np.float32),
            np.asarray(d["latent_std"], np.float32),
            np.asarray(d["delta_scale"], np.float32),
            list(d["horizons"]),
            d["mode"],
            int(d.get("frames", 0)),
        )

    def log_det(self) -> np.ndarray:
        """Per horizon, ``sum(log scale)``: add it to a target-space NLL to get the NLL in latent units."""
        return np.log(self.delta_scale.astype(np.float64)).sum(axis=1)


def fit_tier1_scaling(
    source, horizons, mode: str = "per_dim", split: str = "train", max_frames: int = 500_000, seed: int = 0
) -> Tier1Scaling:
    """Stream over ``split``'s utterances (part by part in a seeded order, up to ``max_frames``) for the statistics."""
    horizons = list(horizons)
    dim = source.dim
    s1, s2, n = np.zeros(dim), np.zeros(dim), 0
    d2, dn = np.zeros((len(horizons), dim)), np.zeros(len(horizons))
    units = np.random.default_rng([seed, 13]).permutation(
        sorted(source.table.loc[source.table["split"] == split, "unit"].unique())
    )
    if not len(units):
        raise ValueError(f"no utterance of split {split!r} to fit the scaling on")
    for unit in units:
        for item in source.load(int(unit)):
            if item["split"] != split:
                continue
            x = item["latents"].astype(np.float64)
            s1 += x.sum(0)
            s2 += (x**2).sum(0)
            n += len(x)
            for i, k in enumerate(horizons):
                if len(x) > k:
                    delta = x[k:] - x[:-k]
                    d2[i] += (delta**2).sum(0)
                    dn[i] += len(delta)
        if n >= max_frames:
            break
    mean = s1 / max(n, 1)
    std = np.sqrt(np.maximum(s2 / max(n, 1) - mean**2, 0.0))
    std = np.where(std > 1e-6, std, 1.0)
    rms = np.sqrt(d2 / np.maximum(dn, 1)[:, None])
    if mode == "per_dim":
        floor = 1e-6 * max(float(rms.max()), 1e-12)
        scale = np.where(rms > floor, rms, 1.0)
    elif mode == "global":
        scale = np.repeat(np.sqrt((rms**2).mean(axis=1, keepdims=True)), dim, axis=1)
        scale = np.where(scale > 1e-12, scale, 1.0)
    elif mode == "none":
        scale = np.ones_like(rms)
    else:
        raise ValueError(f"target scaling must be per_dim, global or none, not {mode!r}")
    return Tier1Scaling(mean.astype(np.float32), std.astype(np.float32), scale.astype(np.float32), horizons, mode, n)


# %% [markdown]
# ## Windows


# %%
def tier1_valid_steps(n_frames: int, window: int, horizons, min_history: int | None = None) -> np.ndarray:
    """Steps ``t`` with ``max(window, min_history)`` frames up to ``t`` and ``t + max(k)`` inside the utterance."""
    first = max(int(window), int(min_history or 0)) - 1
    return np.arange(first, int(n_frames) - max(horizons), dtype=np.int64)


def tier1_windows(latents, steps, window: int, horizons, scaling: Tier1Scaling) -> tuple:
    """``(context [n, W, D], targets [n, K, D])``, scaled, for the steps ``t`` of one utterance."""
    x = np.asarray(latents, dtype=np.float32)
    steps = np.asarray(steps, dtype=np.int64)
    rows = steps[:, None] + np.arange(-(window - 1), 1)[None, :]
    context = (x[rows] - scaling.latent_mean) / scaling.latent_std
    targets = np.stack([(x[steps + k] - x[steps]) / scaling.delta_scale[i] for i, k in enumerate(horizons)], axis=1)
    return context.astype(np.float32), targets.astype(np.float32)


class Tier1WindowDataset(torch.utils.data.IterableDataset):
    """Batches of ``{"context", "targets"[, "cluster"]}`` from one split, sharded over workers and ranks."""

    def __init__(
        self,
        source,
        scaling: Tier1Scaling,
        window: int,
        horizons,
        split: str = "train",
        batch_size: int = 256,
        shuffle_buffer: int = 8192,
        seed: int = 0,
        infinite: bool = True,
        ctx: dict | None = None,
        skip_batches: int = 0,
        cluster_fn=None,
        min_history: int | None = None,
    ):
        super().__init__()
        self.source, self.scaling = source, scaling
        self.window, self.horizons = int(window), list(horizons)
        self.split, self.batch_size = split, int(batch_size)
        self.shuffle_buffer = max(int(shuffle_buffer), self.batch_size)
        self.seed, self.infinite = int(seed), bool(infinite)
        self.ctx = dict(ctx or {"rank": 0, "world_size": 1})
        self.skip_batches = int(skip_batches)
        self.cluster_fn, self.min_history = cluster_fn, min_history
        table = source.table
        usable = table[
            (table["split"] == split) & (table["frames"] > max(window, min_history or 0) - 1 + max(self.horizons))
        ]
        if usable.empty:
            raise ValueError(
                f"no {split} utterance is long enough for a context of {window} frames and horizon "
                f"{max(self.horizons)}; use longer audio or smaller settings"
            )
        self.units = sorted(int(u) for u in usable["unit"].unique())
        self.utterance_number = {name: i for i, name in enumerate(sorted(usable["utterance"]))}
        self.windows_per_epoch = int(
            sum(len(tier1_valid_steps(f, window, self.horizons, min_history)) for f in usable["frames"])
        )

    def _my_work(self):
        shard, shards = distributed_shard_id(self.ctx)
        if len(self.units) >= shards:
            return self.units[shard::shards], None, shard, shards
        return self.units, (shard, shards), shard, shards

    def _items(self, unit: int, utterance_filter):
        for item in self.source.load(unit):
            if item["split"] != self.split or item["utterance"] not in self.utterance_number:
                continue
            number = self.utterance_number[item["utterance"]]
            if utterance_filter is not None and number % utterance_filter[1] != utterance_filter[0]:
                continue
            steps = tier1_valid_steps(len(item["latents"]), self.window, self.horizons, self.min_history)
            context, targets = tier1_windows(item["latents"], steps, self.window, self.horizons, self.scaling)
            extra = {}
            if self.cluster_fn is not None:
                extra["cluster"] = np.asarray(self.cluster_fn(item["latents"], steps), dtype=np.int64)
            yield {"context": context, "targets": targets, **extra}

    def _split(self, pending: list, rng, final: bool) -> tuple:
        """Shuffle the pending windows; ``(full batches, windows kept for the next round)``."""
        buffer = {k: np.concatenate([c[k] for c in pending]) for k in pending[0]}
        n = len(buffer["context"])
        order = rng.permutation(n)
        end = n if final else (n // self.batch_size) * self.batch_size
        batches = [
            {k: torch.from_numpy(np.ascontiguousarray(v[order[s : s + self.batch_size]])) for k, v in buffer.items()}
            for s in range(0, end, self.batch_size)
        ]
        rest = {k: v[order[end:]] for k, v in buffer.items()}
        return batches, ([rest] if len(rest["context"]) else [])

    def __iter__(self):
        units, utterance_filter, shard, shards = self._my_work()
        produced, epoch = 0, 0
        skip = self.skip_batches
        info = torch.utils.data.get_worker_info()
        if info is not None and info.num_workers > 1:  # the DataLoader takes batches from workers in turn
            skip = max(0, (self.skip_batches - info.id + info.num_workers - 1) // info.num_workers)
        while True:
            rng = np.random.default_rng([self.seed, epoch, shard])
            pending, count = [], 0
            for unit in rng.permutation(units):
                for chunk in self._items(int(unit), utterance_filter):
                    pending.append(chunk)
                    count += len(chunk["context"])
                    if count < self.shuffle_buffer:
                        continue
                    batches, pending = self._split(pending, rng, final=False)
                    count = sum(len(c["context"]) for c in pending)
                    for batch in batches:
                        produced += 1
                        if produced > skip:
                            yield batch
            if pending:
                for batch in self._split(pending, rng, final=True)[0]:
                    produced += 1
                    if produced > skip:
                        yield batch
            if produced == 0:
                raise RuntimeError(
                    f"shard {shard} of {shards} (rank x DataLoader worker) got no {self.split} windows: "
                    "use fewer workers or ranks, or more utterances"
                )
            epoch += 1
            if not self.infinite:
                return


# %% [markdown]
# ## Evaluation samples and rollout sequences
#
# Eval windows are planned from `source.table` (frames per utterance) with a seeded draw, then
# only the parts that hold them are read.


# %%
def tier1_sample_windows(
    source,
    scaling: Tier1Scaling,
    window: int,
    horizons,
    split: str = "eval",
    max_samples: int | None = None,
    n_utterances: int | None = None,
    per_utterance: int | None = None,
    seed: int = 0,
    cluster_fn=None,
    min_history: int | None = None,
) -> dict:
    """Arrays ``context, targets, t, utterance, speaker[, cluster]`` of sampled ``split`` windows.

    Either ``n_utterances`` x ``per_utterance`` windows (utterances drawn, then evenly spaced
    random steps inside each), or up to ``max_samples`` windows drawn uniformly from all.
    """
    rng = np.random.default_rng([seed, 17])
    table = source.table[source.table["split"] == split].reset_index(drop=True)
    counts = np.array([len(tier1_valid_steps(f, window, horizons, min_history)) for f in table["frames"]])
    table, counts = table[counts > 0].reset_index(drop=True), counts[counts > 0]
    if table.empty:
        raise ValueError(f"no {split} utterance is long enough for context {window} and horizon {max(horizons)}")
    picks = {}
    if per_utterance is not None:
        chosen = rng.permutation(len(table))[: n_utterances or len(table)]
        for i in chosen:
            n = counts[i]
            take = min(int(per_utterance), n)
            picks[i] = np.sort(rng.choice(n, size=take, replace=False))
    else:
        total = int(counts.sum())
        flat = np.arange(total) if not max_samples or total <= max_samples else rng.choice(total, max_samples, False)
        owner = np.searchsorted(np.cumsum(counts), np.sort(flat), side="right")
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
        for i in np.unique(owner):
            picks[int(i)] = np.sort(flat)[owner == i] - starts[i]
    out = {"context": [], "targets": [], "t": [], "utterance": [], "speaker": [], "cluster": []}
    for unit in sorted(table.loc[list(picks), "unit"].unique()):
        wanted = {table.loc[i, "utterance"]: i for i in picks if table.loc[i, "unit"] == unit}
        for item in source.load(int(unit)):
            if item["utterance"] not in wanted or item["split"] != split:
                continue
            i = wanted[item["utterance"]]
            steps = tier1_valid_steps(len(item["latents"]), window, horizons, min_history)[picks[i]]
            context, targets = tier1_windows(item["latents"], steps, window, horizons, scaling)
            out["context"].append(context)
            out["targets"].append(targets)
            out["t"].append(steps)
            out["utterance"] += [item["utterance"]] * len(steps)
            out["speaker"] += [item["speaker"]] * len(steps)
            if cluster_fn is not None:
                out["cluster"].append(np.asarray(cluster_fn(item["latents"], steps), dtype=np.int64))
    result = {
        "context": np.concatenate(out["context"]),
        "targets": np.concatenate(out["targets"]),
        "t": np.concatenate(out["t"]),
        "utterance": np.asarray(out["utterance"]),
        "speaker": np.asarray(out["speaker"]),
    }
    if cluster_fn is not None:
        result["cluster"] = np.concatenate(out["cluster"])
    return result


def tier1_sample_sequences(source, split: str, length: int, n: int, seed: int = 0) -> dict:
    """``n`` real stretches of ``length`` consecutive frames (raw latents and energy) from ``split``."""
    rng = np.random.default_rng([seed, 29])
    table = source.table[(source.table["split"] == split) & (source.table["frames"] >= length)]
    if table.empty:
        raise ValueError(f"no {split} utterance has {length} frames for a rollout; lower rollout.steps")
    rows = table.iloc[rng.choice(len(table), size=n, replace=len(table) < n)]
    wanted = rows.groupby("unit")["utterance"].apply(list).to_dict()
    latents, energy, names = [], [], []
    for unit, utterances in wanted.items():
        items = {item["utterance"]: item for item in source.load(int(unit))}
        for name in utterances:
            item = items[name]
            start = int(rng.integers(0, len(item["latents"]) - length + 1))
            latents.append(item["latents"][start : start + length])
            energy.append(item["energy"][start : start + length])
            names.append(name)
    return {"latents": np.stack(latents), "energy": np.stack(energy), "utterance": np.asarray(names)}


# %% [markdown]
# ## Planted data with a known answer
#
# - `vmf_lognormal`: a random walk whose steps are drawn from a known
#   `vMF(mu, kappa) x LogNormal(m, s)` (one mean direction `mu`); a fitted model must recover
#   `kappa`, `m` and `s`, and its NLL must beat the Gaussian head's.
# - `gaussian`: independent frames `x[t] ~ Normal(0, sigma^2 I)`, so every delta is isotropic
#   Gaussian, marginally (`2 sigma^2 I`) and given the context (mean `-x[t]`, `sigma^2 I`); the
#   Gaussian head must win or tie.
# - `cluster_memory`: frames sit at one of `states` centroids and move to the next one in a
#   fixed cycle, so the next step is a function of the current cluster; a lookup memory of
#   cluster-mean deltas knows it exactly.


# %%
def tier1_planted_source(
    kind: str,
    speakers: int = 40,
    utterances_per_speaker: int = 3,
    frames: int = 100,
    dim: int = 16,
    eval_speakers: int = 8,
    seed: int = 0,
    kappa: float = 40.0,
    log_mean: float = 0.7,
    log_sd: float = 0.25,
    sigma: float = 0.5,
    states: int = 64,
    noise: float = 0.1,
) -> tuple:
    """``(Tier1ArraySource, truth dict)`` of planted sequences (see above)."""
    rng = np.random.default_rng(seed)
    mu = rng.normal(size=dim)
    mu /= np.linalg.norm(mu)
    centroids = rng.normal(0.0, 3.0, size=(states, dim))
    utterances = []
    for s in range(speakers):
        for u in range(utterances_per_speaker):
            n = frames
            if kind == "vmf_lognormal":
                steps = vmf_lognormal_sample(np.tile(mu, (n - 1, 1)), kappa, log_mean, log_sd, rng)
            elif kind == "gaussian":
                x = rng.normal(0.0, sigma, size=(n, dim))
            elif kind == "cluster_memory":
                state = (int(rng.integers(states)) + np.arange(n)) % states
                x = centroids[state] + rng.normal(0.0, noise, size=(n, dim))
            else:
                raise ValueError(f"kind must be vmf_lognormal, gaussian or cluster_memory, not {kind!r}")
            if kind == "vmf_lognormal":
                x = np.concatenate([rng.normal(size=(1, dim)), steps]).cumsum(axis=0)
            utterances.append(
                {
                    "utterance": f"{kind}-{s:03d}-{u:02d}",
                    "speaker": f"spk{s:03d}",
                    "split": "eval" if s < eval_speakers else "train",
                    "latents": x.astype(np.float32),
                    "energy": np.zeros(n, np.float32),
                }
            )
    truth = {"kind": kind, "dim": dim, "mu": mu, "kappa": kappa, "log_mean": log_mean, "log_sd": log_sd}
    truth.update({"sigma": sigma, "states": states, "centroids": centroids})
    return Tier1ArraySource(utterances, name=f"planted-{kind}"), truth
