# %% [markdown]
# # Tier 1 next-step model: a causal trunk with a vMF x LogNormal head or a diagonal Gaussian head
#
# `Tier1NextStepModel` reads the `W` context frames (standardised) and predicts, for every
# horizon `k`, the distribution of the scaled delta `x[t+k] - x[t]`:
#
# - **trunk** `mlp`: the flattened window through residual GELU blocks; `transformer`: frames
#   as tokens with learned positions, causal self-attention, the last token's output;
# - **head** `vmf`: a mean direction (normalised), `log kappa`, and the LogNormal's `m` and
#   `log s` per horizon; `gaussian`: a mean and `log sigma` per dimension. Both heads start
#   at the maximum-likelihood constants of the train targets (`init_from_targets`), so
#   training refines a sensible baseline rather than climbing out of a random one;
# - **memory** (Exp 2, `add_memory`): `input` projects a memory vector per horizon into the
#   trunk's hidden state, `bias` adds it (times a learned gain per horizon) to the predicted
#   mean; both start at zero, so a model with memory behaves as the Exp 1 model until trained.
#
# `tier1_model_fingerprint` hashes the architecture (spec, parameter names and shapes) and
# `tier1_weights_digest` the weights: checkpoints carry both.

# %%
import hashlib
import json
import math

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from lib.phase0.tier1_vmf import (
    VMF_KAPPA_MAX,
    VMF_KAPPA_MIN,
    gaussian_nll,
    vmf_kappa_from_resultant,
    vmf_lognormal_nll,
)

TIER1_HEADS = ("vmf", "gaussian")


class Tier1NextStepModel(nn.Module):
    """Context window ``[B, W, D]`` -> per-horizon distribution parameters of the next-step delta."""

    def __init__(
        self,
        dim: int,
        window: int,
        horizons,
        head: str = "vmf",
        kind: str = "mlp",
        hidden: int = 256,
        layers: int = 2,
        heads: int = 4,
        dropout: float = 0.0,
    ):
        super().__init__()
        if head not in TIER1_HEADS:
            raise ValueError(f"head must be one of {TIER1_HEADS}, not {head!r}")
        if kind not in ("mlp", "transformer"):
            raise ValueError(f"model kind must be mlp or transformer, not {kind!r}")
        self.spec = {
            "dim": int(dim),
            "window": int(window),
            "horizons": [int(k) for k in horizons],
            "head": head,
            "kind": kind,
            "hidden": int(hidden),
            "layers": int(layers),
            "heads": int(heads),
            "dropout": float(dropout),
        }
        self.dim, self.window, self.n_horizons = int(dim), int(window), len(self.spec["horizons"])
        self.head_kind, self.kind = head, kind
        if kind == "mlp":
            self.inp = nn.Linear(window * dim, hidden)
            self.blocks = nn.ModuleList(
                nn.Sequential(nn.LayerNorm(hidden), nn.Linear(hidden, hidden), nn.GELU(), nn.Dropout(dropout))
                for _ in range(max(0, layers - 1))
            )
        else:
            if hidden % heads:
                raise ValueError(f"model.hidden ({hidden}) must be divisible by model.heads ({heads})")
            self.inp = nn.Linear(dim, hidden)
            self.pos = nn.Parameter(torch.zeros(window, hidden))
            layer = nn.TransformerEncoderLayer(
                hidden, heads, 2 * hidden, dropout, activation="gelu", batch_first=True, norm_first=True
            )
            self.encoder = nn.TransformerEncoder(layer, max(1, layers), enable_nested_tensor=False)
            self.register_buffer("causal", torch.triu(torch.full((window, window), float("-inf")), 1))
        self.norm = nn.LayerNorm(hidden)
        width = dim + 3 if head == "vmf" else 2 * dim
        self.out = nn.Linear(hidden, self.n_horizons * width)
        self.width = width
        self.memory_mode = None

    # ------------------------------------------------------------------ memory (Exp 2)
    def add_memory(self, mode: str = "input") -> None:
        """Add a zero-initialised memory pathway (``input`` or ``bias``); the outputs are unchanged until trained."""
        if mode == "input":
            self.memory_proj = nn.Linear(self.n_horizons * self.dim, self.out.in_features)
            nn.init.zeros_(self.memory_proj.weight)
            nn.init.zeros_(self.memory_proj.bias)
        elif mode == "bias":
            self.memory_gain = nn.Parameter(torch.zeros(self.n_horizons))
        else:
            raise ValueError(f"memory mode must be input or bias, not {mode!r}")
        self.memory_mode = mode
        self.spec["memory_mode"] = mode

    # ------------------------------------------------------------------ forward
    def trunk(self, context: torch.Tensor) -> torch.Tensor:
        if self.kind == "mlp":
            h = F.gelu(self.inp(context.flatten(1)))
            for block in self.blocks:
                h = h + block(h)
        else:
            tokens = self.inp(context) + self.pos
            h = self.encoder(tokens, mask=self.causal, is_causal=True)[:, -1]
        return self.norm(h)

    def forward(self, context: torch.Tensor, memory: torch.Tensor | None = None) -> dict:
        h = self.trunk(context)
        if memory is not None and self.memory_mode == "input":
            h = h + self.memory_proj(memory.flatten(1).to(h.dtype))
        raw = self.out(h).view(len(h), self.n_horizons, self.width)
        d = self.dim
        mean = raw[..., :d]
        if memory is not None and self.memory_mode == "bias":
            mean = mean + self.memory_gain.view(1, -1, 1) * memory.to(mean.dtype)
        if self.head_kind == "vmf":
            log_kappa = raw[..., d].clamp(math.log(VMF_KAPPA_MIN), math.log(VMF_KAPPA_MAX))
            return {
                "mu": F.normalize(mean.float(), dim=-1),
                "kappa": log_kappa.float().exp(),
                "m": raw[..., d + 1].float(),
                "log_s": raw[..., d + 2].float().clamp(-7.0, 3.0),
            }
        return {"mean": mean.float(), "log_sigma": raw[..., d:].float().clamp(-7.0, 5.0)}

    # ------------------------------------------------------------------ initialisation
    @torch.no_grad()
    def init_from_targets(self, targets: np.ndarray, weight_scale: float = 0.1) -> None:
        """Output biases at the maximum-likelihood constants of ``targets [n, K, D]``; small output weights."""
        targets = np.asarray(targets, dtype=np.float64)
        self.out.weight.mul_(weight_scale)
        bias = self.out.bias.view(self.n_horizons, self.width)
        for i in range(self.n_horizons):
            t = targets[:, i]
            if self.head_kind == "vmf":
                r = np.maximum(np.linalg.norm(t, axis=1), 1e-6)
                mean_u = (t / r[:, None]).mean(axis=0)
                resultant = float(np.linalg.norm(mean_u))
                bias[i, : self.dim] = torch.as_tensor(mean_u / max(resultant, 1e-6), dtype=bias.dtype)
                bias[i, self.dim] = float(np.log(vmf_kappa_from_resultant(self.dim, resultant)))
                bias[i, self.dim + 1] = float(np.log(r).mean())
                bias[i, self.dim + 2] = float(np.log(max(np.log(r).std(), 1e-3)))
            else:
                bias[i, : self.dim] = torch.as_tensor(t.mean(axis=0), dtype=bias.dtype)
                bias[i, self.dim :] = torch.as_tensor(np.log(np.maximum(t.std(axis=0), 1e-3)), dtype=bias.dtype)


# %% [markdown]
# ## Likelihood, fingerprints, construction


# %%
def tier1_nll(head: str, params: dict, targets: torch.Tensor) -> dict:
    """``{"nll": [B, K], ...}`` in nats per frame on the target space (see `lib.phase0.tier1_vmf`)."""
    if head == "vmf":
        return vmf_lognormal_nll(params["mu"], params["kappa"], params["m"], params["log_s"], targets)
    return {"nll": gaussian_nll(params["mean"], params["log_sigma"], targets)}


def tier1_model_fingerprint(model: nn.Module) -> str:
    """Hash of the architecture: spec, parameter names and shapes (not the values)."""
    model = getattr(model, "module", model)
    model = getattr(model, "_orig_mod", model)
    digest = hashlib.sha256(json.dumps(model.spec, sort_keys=True).encode())
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(f"{name}:{tuple(tensor.shape)}".encode())
    return digest.hexdigest()[:16]


def tier1_weights_digest(model: nn.Module) -> str:
    """Hash of the weights' values (a strided sample of every tensor)."""
    model = getattr(model, "module", model)
    model = getattr(model, "_orig_mod", model)
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        flat = tensor.detach().reshape(-1).float().cpu()
        digest.update(name.encode())
        digest.update(flat[:: max(1, flat.numel() // 4096)].numpy().tobytes())
    return digest.hexdigest()[:16]


def tier1_build_models(dim: int, config: dict, heads=TIER1_HEADS) -> dict:
    """``{"vmf": model, "gaussian": model}``: the same trunk, the two heads (``config`` is the Tier 1 config)."""
    m = config["model"]
    return {
        head: Tier1NextStepModel(
            dim,
            config["context"]["window"],
            config["context"]["horizons_k"],
            head=head,
            kind=m["kind"],
            hidden=m["hidden"],
            layers=m["layers"],
            heads=m["heads"],
            dropout=m["dropout"],
        )
        for head in heads
    }
