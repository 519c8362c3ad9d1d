# %% [markdown]
# # Plugin registries for masked-autoencoder training
#
# Models, data sources and input transforms are looked up **by name** in three registries,
# filled with decorators. A new model, data set or transform is added by writing a class
# that implements the matching abstract base class and decorating it, e.g.
#
# ```python
# @register_mae_transform("my_cqt")
# class MyCqt(MaeTransformBase):
#     ...
# ```
#
# after which `MAE_TRANSFORMS.build("my_cqt", ...)` (and every notebook parameter that names a
# transform) can use it, without touching the training code. The base classes state the
# interface the training loop relies on; registering a class that does not subclass the base
# is an error, so a plugin that forgets a method fails at registration, not mid-run.

# %%
import inspect
from abc import ABC, ABCMeta, abstractmethod

import numpy as np
import torch
from torch import nn


class MaeRegistry:
    """A name -> class table filled with the ``register(name)`` decorator."""

    def __init__(self, kind: str, base: type):
        self.kind = kind
        self.base = base
        self._entries = {}

    def register(self, name: str):
        """Decorator: ``@registry.register("name")`` adds the class under ``name``."""
        if not isinstance(name, str) or not name:
            raise ValueError(f"{self.kind} names must be non-empty strings, not {name!r}")

        def decorate(cls):
            if not (inspect.isclass(cls) and issubclass(cls, self.base)):
                raise TypeError(f"{cls!r} cannot be registered as a {self.kind}: it must subclass {self.base.__name__}")
            if inspect.isabstract(cls):
                missing = sorted(getattr(cls, "__abstractmethods__", ()))
                raise TypeError(
                    f"{cls.__name__} cannot be registered as a {self.kind}: it does not implement {', '.join(missing)}"
                )
            existing = self._entries.get(name)
            if existing is not None and existing.__qualname__ != cls.__qualname__:
                raise KeyError(
                    f"{self.kind} {name!r} is already registered to {existing.__name__}; choose another name"
                )
            self._entries[name] = cls
            cls.registry_name = name
            return cls

        return decorate

    def get(self, name: str) -> type:
        if name not in self._entries:
            raise KeyError(f"unknown {self.kind} {name!r}; registered: {', '.join(self.names()) or '(none)'}")
        return self._entries[name]

    def build(self, name: str, **kwargs):
        """Instantiate the class registered under ``name`` with ``kwargs``."""
        return self.get(name)(**kwargs)

    def names(self) -> list:
        return sorted(self._entries)

    def __contains__(self, name) -> bool:
        return name in self._entries

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"MaeRegistry({self.kind}: {', '.join(self.names())})"


# %% [markdown]
# ## Interfaces
#
# - **Model** (`MaeModelBase`, a `torch.nn.Module`): takes spectrogram-like batches
#   `[N, 1, F, T]` (F and T multiples of the patch size); `forward(x)` returns the
#   pretraining loss and reconstruction, `encode(x)` one vector per clip `[N, D]`.
# - **Data source** (`MaeDataSourceBase`): returns a manifest (a DataFrame with `path`,
#   `label`, `split` columns, `split` in train/test) and the class names.
# - **Transform** (`MaeTransformBase`): maps one raw signal (a waveform, complex IQ samples...)
#   to a float32 array `[1, F, T]` of a fixed `output_shape`; `config` identifies it for caches.


# %%
class MaeModelBase(nn.Module, metaclass=ABCMeta):
    """Interface of a masked-autoencoder model usable by the training loop."""

    config: dict  # everything needed to rebuild the model (saved in checkpoints)
    embed_dim: int  # size of the vectors ``encode`` returns

    @abstractmethod
    def forward(self, specs: torch.Tensor, mask_ratio=None) -> dict:
        """Masked pretraining step: ``{"loss", "pred" [N, L, P], "mask" [N, L], "target" [N, L, P]}``."""

    @abstractmethod
    def forward_features(self, specs: torch.Tensor) -> torch.Tensor:
        """All tokens of the unmasked input, ``[N, 1 + L, D]`` (CLS first)."""

    @abstractmethod
    def encode(self, specs: torch.Tensor, pooling=None) -> torch.Tensor:
        """One embedding per clip, ``[N, D]``. Fine-tuning with ``patch_drop`` also passes
        ``patch_drop=share``: encode a random ``1 - share`` of each clip's patches."""

    @abstractmethod
    def patchify(self, specs: torch.Tensor) -> torch.Tensor:
        """``[N, 1, F, T]`` -> ``[N, L, P]`` patches."""

    @abstractmethod
    def unpatchify(self, patches: torch.Tensor, freq_bins: int, frames: int) -> torch.Tensor:
        """``[N, L, P]`` -> ``[N, 1, F, T]``."""


class MaeDataSourceBase(ABC):
    """Interface of a labelled clip collection: a manifest with a train/test split."""

    held_out_speakers: (
        tuple | list
    ) = ()  # the test split's speakers, where whole speakers are held out (set by manifest())
    group_column: str | None = None  # the column whose groups the split holds out whole, if it does (manifest())

    @abstractmethod
    def manifest(self):
        """DataFrame with at least ``path``, ``label`` (int), ``label_name`` and ``split`` columns."""

    @property
    @abstractmethod
    def class_names(self) -> list:
        """Label names, indexed by the integer ``label``."""


class MaeTransformBase(ABC):
    """Interface of an input transform: one raw signal -> ``[1, F, T]`` float32."""

    input_kind = "audio"  # "audio" (real waveform) or "iq" (complex samples)

    @property
    @abstractmethod
    def output_shape(self) -> tuple:
        """``(1, F, T)`` of every output."""

    @property
    @abstractmethod
    def config(self) -> dict:
        """JSON-serialisable parameters; two transforms with equal config give equal outputs."""

    @abstractmethod
    def __call__(self, signal: np.ndarray, sample_rate: int) -> np.ndarray:
        """Transform one signal sampled at ``sample_rate``."""


MAE_MODELS = MaeRegistry("model", MaeModelBase)
MAE_DATA_SOURCES = MaeRegistry("data source", MaeDataSourceBase)
MAE_TRANSFORMS = MaeRegistry("transform", MaeTransformBase)


def register_mae_model(name: str):
    """Decorator adding a ``MaeModelBase`` subclass to ``MAE_MODELS``."""
    return MAE_MODELS.register(name)


def register_mae_data_source(name: str):
    """Decorator adding a ``MaeDataSourceBase`` subclass to ``MAE_DATA_SOURCES``."""
    return MAE_DATA_SOURCES.register(name)


def register_mae_transform(name: str):
    """Decorator adding a ``MaeTransformBase`` subclass to ``MAE_TRANSFORMS``."""
    return MAE_TRANSFORMS.register(name)
