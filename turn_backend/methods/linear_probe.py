"""Linear-probing baselines: a linear head on the frozen pre-trained features, one per loss."""

from turn_backend.methods.registry import Method, register_method

LINEAR_PROBE_STAGES = ("data", "features", "audit", "probe", "final", "projections", "metrics")

for _loss, _name in (("ce", "cross-entropy"), ("gce", "generalized cross-entropy"),
                     ("elr", "early-learning regularization")):
    register_method(Method(name=f"lp-{_loss}", description=f"Linear probing, {_name}", kind="lp", loss=_loss,
                           probe_loss=_loss, stages=LINEAR_PROBE_STAGES))
