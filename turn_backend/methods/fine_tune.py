"""Full fine-tuning baselines: every sample, every round, from a fresh head, one per loss;
and fine-tuning on the true labels, the clean reference."""

from turn_backend.methods.registry import Method, register_method

FINE_TUNE_STAGES = ("data", "features", "audit", "rounds", "final", "projections", "metrics")
DEFAULT_ROUNDS = 5  # the paper's FFT epochs

for _loss, _name in (("ce", "cross-entropy"), ("gce", "generalized cross-entropy"),
                     ("elr", "early-learning regularization")):
    register_method(Method(name=f"fft-{_loss}", description=f"Full fine-tuning on all samples, {_name}", kind="fft",
                           loss=_loss, default_rounds=DEFAULT_ROUNDS, stages=FINE_TUNE_STAGES))
register_method(Method(
    name="fft-true", description="Full fine-tuning on the true labels (clean reference; needs ground truth)",
    kind="fft", loss="ce", default_rounds=DEFAULT_ROUNDS, stages=FINE_TUNE_STAGES, trains_on_true_labels=True,
))
