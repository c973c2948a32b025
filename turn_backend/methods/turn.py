"""TURN (Ahn et al., IJCAI 2024) as published, and TURN+, the product's recommended variant.

Both: a linear probe with GCE, then rounds that each select the samples a clean-sample
detector trusts and fine-tune the whole model on them. Their differences are TURN options
(RunConfig fields; `RunConfig.turn_option` falls back to the defaults registered here):
TURN_DEFAULTS is the paper; TURN_PLUS_DEFAULTS is motivated and measured in
docs/benchmarks.md. Both dicts live in turn_backend.config, where they are tuned.
"""

from turn_backend.config import TURN_DEFAULTS, TURN_PLUS_DEFAULTS
from turn_backend.methods.registry import Method, register_method

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
