"""What every model in the registry provides: a feature extractor, a linear head, the
preprocessing it expects, and the paper's hyperparameters for its family."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch
from torch import nn

from turn_backend.errors import ModelError  # noqa: F401  (re-exported)


@dataclass(frozen=True)
class Preprocess:
    """How images become tensors for this model."""

    image_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    interpolation: str = "bilinear"

    def key(self) -> str:
        return f"{self.image_size}-{self.mean}-{self.std}-{self.interpolation}"


@dataclass(frozen=True)
class StageHParams:
    optimizer: str  # "sgd" or "adamw"
    lr: float
    weight_decay: float


@dataclass(frozen=True)
class HParams:
    """Per-model optimiser settings for linear probing and full fine-tuning (paper, Table 8)."""

    lp: StageHParams
    fft: StageHParams
    source: str = "paper Table 8"

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class ModelSpec:
    """Registry entry: a model name and what is known before building it."""

    name: str
    family: str
    hparams: HParams
    description: str = ""
    extra: dict = field(default_factory=dict)


class FeatureExtractor(nn.Module):
    """Wraps a backbone so that `forward(x)` returns one pooled feature vector per image."""

    def __init__(self, backbone: nn.Module, feature_dim: int, pool) -> None:
        super().__init__()
        self.backbone = backbone
        self.feature_dim = feature_dim
        self._pool = pool

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._pool(self.backbone, x)


class Classifier(nn.Module):
    """g(f(x)): the feature extractor followed by a linear head."""

    def __init__(self, extractor: FeatureExtractor, num_classes: int) -> None:
        super().__init__()
        self.extractor = extractor
        self.head = nn.Linear(extractor.feature_dim, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.extractor(x))


@dataclass
class LoadedModel:
    """A built extractor with its preprocessing and hyperparameters."""

    name: str
    extractor: FeatureExtractor
    preprocess: Preprocess
    hparams: HParams
    family: str
