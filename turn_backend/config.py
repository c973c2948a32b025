"""Run configuration: what to train, on what, how. Saved as the run's `config.json`."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from turn_backend.methods import Method, get_method
from turn_backend.methods.turn import CLEANSING_MODES, LR_DECAYS, SCORING_MODES

# Methods are registered by name in turn_backend.methods (the registry); "turn+" is the
# product's recommended variant (see docs/benchmarks.md), "turn" is TURN exactly as published.
DEFAULT_METHOD = "turn+"
# the method of a run on given features or probabilities where none is named (turn_backend.given_inputs)
GIVEN_INPUTS_METHOD = "lp-gce"


# The default run: the embedded demo with 40% symmetric noise (the app starts from it too).
DEFAULT_DATASET = {"kind": "demo", "n_train": 3000, "n_test": 1000}
DEFAULT_NOISE = {"kind": "symmetric", "rate": 0.4, "seed": 0}


def method_kind(method: str) -> str:
    """'turn' (cleansing rounds), 'lp' (linear probe only) or 'fft' (plain fine-tuning); ''
    for a name the registry does not hold (a run folder's config may be older than it)."""
    try:
        return get_method(method).kind
    except ValueError:
        return ""


@dataclass
class RunConfig:
    dataset: dict = field(default_factory=lambda: dict(DEFAULT_DATASET))
    noise: dict = field(default_factory=lambda: dict(DEFAULT_NOISE))
    model: str = "efficientnet_lite0"
    pretrained: bool = True
    checkpoint: str | None = None
    method: str = DEFAULT_METHOD
    image_size: int | None = None  # None: the model's own size
    batch_size: int = 128
    lp_epochs: int = 20
    fft_epochs: int | None = None  # None: the method's default_rounds (turn_backend.methods)
    tau: float = 0.6
    gce_q: float = 0.7
    lp_optimizer: str | None = None  # None: the model family's paper setting
    lp_lr: float | None = None
    lp_weight_decay: float | None = None
    fft_optimizer: str | None = None
    fft_lr: float | None = None
    fft_weight_decay: float | None = None
    freeze_bn_stats: bool = True
    # TURN variants (see methods.turn.TURN_DEFAULTS / TURN_PLUS_DEFAULTS; None: the method's default)
    # "min": N = min_c |D_c| per class (published); "mean": all candidates, topped up to the mean
    balance: str | None = None
    cleansing: str | None = None  # "every" round (published), "once" (round 1's clean set reused), "none" (FFT on all)
    warmup_backbone_lr: float | None = None  # round 1 only: backbone LR x this (protects the LP head)
    relabel_confidence: float | None = None  # flagged samples predicted with p >= this train with the predicted label
    scoring: str | None = None  # "gmm" (published) or "ensemble" (turn_backend.detect)
    # share of round 1's confidently clean samples held out of training; the run ends with
    # whichever of the fine-tuned model and a linear probe on the cleaned labels scores
    # better on them. Off (None) for TURN and TURN+: on the benchmark the confidently clean
    # samples are the easy ones, they favoured the probe, and the choice cost accuracy
    # (docs/benchmarks.md, turn+:holdout=0.1)
    holdout: float | None = None
    # cleansing "every": re-select the clean set every this many rounds (1: each round, as
    # published; 2: rounds 1, 3, 5, ..., the rounds between train on the last selection)
    cleanse_interval: int | None = None
    # the fine-tuning LR over the rounds: "none" (constant, as published) or "cosine" (round r
    # of R at LR x (1 + cos(pi (r - 1) / R)) / 2, so the last round moves the model least).
    # "none" for TURN+ too: on the benchmark cosine helped at 1,000 images of 10 classes and
    # cost 3 points on the 400-image two-class set (docs/benchmarks.md, turn+:lr_decay=cosine)
    lr_decay: str | None = None
    # the final classifier averages the fine-tuned model's class probabilities with those of a
    # linear probe on the frozen pre-trained features, trained on the cleaned labels (the last
    # round's training set). On for TURN+: the probe cannot memorise what fine-tuning does,
    # and in two benchmark grids the pair beat the fine-tuned model alone in 20 and 18 of 32
    # runs (lost 10 and 11; README, docs/benchmarks.md, turn+:probe_ensemble=false). Costs one
    # probe fit, and one more forward pass through the pre-trained backbone per image at
    # prediction time.
    probe_ensemble: bool | None = None
    seed: int = 0
    device: str = "auto"  # auto, cpu, cuda, cuda:N; several processes come from the launcher
    num_processes: int = 1
    mixed_precision: str = "auto"
    num_workers: int | None = None
    projection_methods: list = field(default_factory=lambda: ["tsne"])
    projection_split: str = "train"  # the training set: its maps show clean probabilities and flags
    projection_classes: int = 10
    # every sample is mapped up to this many (beyond, a seeded sample): a million-point map
    # costs one fit on projection.MAP_FIT_POINTS of them and a cheap placement of the rest
    projection_max_samples: int = 2_000_000
    # set by turn_backend.retrain: {"run": source run path, "decisions": n, ...}; the run then
    # trains on the labels in its reviewed_labels.parquet
    retrained_from: dict | None = None
    # files a person brings instead of the image model (turn_backend.given_inputs): the
    # training set's features, the test set's, the training set's predicted class probabilities
    features: str | None = None
    test_features: str | None = None
    pred_probs: str | None = None

    def __post_init__(self) -> None:
        self._method()  # a registered name, else ValueError naming the choices
        if not 0.0 <= self.tau <= 1.0:
            raise ValueError(f"tau must be between 0 and 1, got {self.tau}")
        if self.batch_size < 1:
            raise ValueError("batch size must be at least 1")
        if self.balance is not None and self.balance not in ("min", "mean"):
            raise ValueError(f"balance must be 'min' or 'mean', got {self.balance!r}")
        if self.cleansing is not None and self.cleansing not in CLEANSING_MODES:
            raise ValueError(f"cleansing must be one of {', '.join(CLEANSING_MODES)}, got {self.cleansing!r}")
        if self.warmup_backbone_lr is not None and not self.warmup_backbone_lr >= 0:
            raise ValueError(f"warmup_backbone_lr must be >= 0, got {self.warmup_backbone_lr}")
        if self.scoring is not None and self.scoring not in SCORING_MODES:
            raise ValueError(f"scoring must be one of {', '.join(SCORING_MODES)}, got {self.scoring!r}")
        if self.lr_decay is not None and self.lr_decay not in LR_DECAYS:
            raise ValueError(f"lr_decay must be one of {', '.join(LR_DECAYS)}, got {self.lr_decay!r}")
        if self.cleanse_interval is not None and self.cleanse_interval < 1:
            raise ValueError(f"cleanse_interval must be >= 1, got {self.cleanse_interval}")
        if self.holdout is not None and not 0.0 <= self.holdout < 0.5:
            raise ValueError(f"holdout must be in [0, 0.5), got {self.holdout}")
        if self.probe_ensemble is not None and not isinstance(self.probe_ensemble, bool):
            raise ValueError(f"probe_ensemble must be true or false, got {self.probe_ensemble!r}")
        if self.holdout and self.probe_ensemble:
            raise ValueError("holdout chooses between the fine-tuned model and the probe, probe_ensemble "
                             "averages them: set one of them, not both")
        if self.relabel_confidence is not None and not 0.0 < self.relabel_confidence <= 1.0:
            raise ValueError(f"relabel_confidence must be in (0, 1], got {self.relabel_confidence}")
        if (self.features or self.pred_probs) and self.kind != "lp":
            raise ValueError(f"given features and probabilities (--features, --pred-probs) work with the lp-* "
                             f"methods (e.g. lp-gce), not {self.method}: fine-tuning needs the image model")
        if self.test_features and not self.features:
            raise ValueError("test features (--test-features) go with the training set's (--features)")

    def _method(self) -> Method:
        return get_method(self.method)

    @property
    def method_spec(self) -> Method:
        """The registered `Method` this config names (its stages, kind, loss, option defaults)."""
        return self._method()

    @property
    def kind(self) -> str:
        return self._method().kind

    def turn_option(self, name: str):
        """A TURN variant option: the config's own value, else the method's default; None
        for a method that takes no such option (the baselines take none)."""
        defaults = self._method().options
        if name not in defaults:
            return None
        value = getattr(self, name)
        return defaults[name] if value is None else value

    @property
    def clean_source(self) -> str:
        """What a run's final clean probability (its flags: Threshold, Review, Export) is:
        "GMM", TURN's per-class GMM on the final model's losses, for the runs that select by
        it (TURN as published, turn+ with scoring "gmm"); "combined", the detection layer's
        clean probability, for every other run. The GMM splits a class in two even where its
        labels are all right; the baselines select nothing, so their flags need not follow it."""
        return "GMM" if self.turn_option("scoring") == "gmm" else "combined"

    @property
    def rounds(self) -> int:
        """Fine-tuning rounds: fft_epochs, else the method's default (0 for a linear probe)."""
        if self.kind == "lp":
            return 0
        return self._method().default_rounds if self.fft_epochs is None else self.fft_epochs

    def to_json(self, path: Path) -> None:
        Path(path).write_text(json.dumps(asdict(self), indent=2))

    @classmethod
    def from_dict(cls, data: dict) -> RunConfig:
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown config keys: {', '.join(sorted(unknown))}")
        return cls(**data)

    @classmethod
    def from_json(cls, path: Path) -> RunConfig:
        return cls.from_dict(json.loads(Path(path).read_text()))
