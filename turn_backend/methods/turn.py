"""TURN (Ahn et al., IJCAI 2024) as published, and TURN+, the product's recommended variant.

Both: a linear probe with GCE, then rounds that each select the samples a clean-sample
detector trusts and fine-tune the whole model on them. Their differences are TURN options
(RunConfig fields; `RunConfig.turn_option` falls back to the defaults registered here):
TURN_DEFAULTS is the paper; TURN_PLUS_DEFAULTS is motivated and measured in
docs/benchmarks.md. Both dicts, and the options' choices, live here, where they are tuned;
`RunConfig` validates against them.
"""

from turn_backend.methods.registry import Method, register_method

# TURN variant options (RunConfig fields; None means "the method's default").
# "turn" as published uses none of them: balance "min", cleansing every round, no warm-up,
# no relabelling. "turn+" takes its defaults from TURN_PLUS_DEFAULTS; each entry is
# motivated and measured in docs/benchmarks.md (`turn bench`).
CLEANSING_MODES = ("every", "once", "none")
# "scoring": "gmm" is TURN's per-class GMM on the model's losses; "ensemble" is the combined
# clean probability of turn_backend.detect (probes, neighbours, noise model).
TURN_DEFAULTS = {"balance": "min", "cleansing": "every", "warmup_backbone_lr": None, "relabel_confidence": None,
                 "scoring": "gmm", "holdout": None, "cleanse_interval": 1, "lr_decay": "none",
                 "probe_ensemble": False}
TURN_PLUS_DEFAULTS = {"balance": "mean", "cleansing": "every", "warmup_backbone_lr": None,
                      "relabel_confidence": 0.9, "scoring": "ensemble", "holdout": None, "cleanse_interval": 1,
                      "lr_decay": "none", "probe_ensemble": True}
SCORING_MODES = ("gmm", "ensemble")
LR_DECAYS = ("none", "cosine")

# the choice stage runs where the "probe_ensemble" (TURN+) or "holdout" option is set
TURN_STAGES = ("data", "features", "audit", "probe", "rounds", "choice", "final", "projections", "metrics")

register_method(Method(
    name="turn+",
    description="TURN+ (recommended): LP-GCE, then rounds that keep every sample the combined detection score "
                "calls clean (class-balanced), relabelling the confidently mislabelled; ends with the fine-tuned "
                "model averaged with a linear probe on the cleaned labels",
    kind="turn", loss="ce", probe_loss="gce", default_rounds=5, stages=TURN_STAGES, options=TURN_PLUS_DEFAULTS,
))
register_method(Method(
    name="turn",
    description="TURN as published: LP-GCE, then per-class GMM cleansing and FFT on N = min_c |D_c| per class",
    kind="turn", loss="ce", probe_loss="gce", default_rounds=4, stages=TURN_STAGES, options=TURN_DEFAULTS,
))
