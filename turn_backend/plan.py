"""The plan of a run: the steps the runner goes through for a config, as the app shows them.

Kept apart from `runner` (which imports every stage, and torch) so that the app reads it
without loading torch. `runner` runs the method's stages (`Method.stages`); a step here is
one of those stages as a person follows it: the fine-tuning stage is one step per round,
and the audit and metrics stages, bookkeeping beside the others, have no step of their own.
"""

from __future__ import annotations

from turn_backend.config import RunConfig


def plan_stages(config: RunConfig) -> list[tuple[str, str]]:
    """(key, title) of each step of a run of `config`, in order. Keys: "data", "features",
    "lp", "round-1" ... "round-R", "choice", "final", "projections"."""
    method = config.method_spec
    steps = [("data", "Dataset"), ("features", "Features")]
    if "probe" in method.stages and not config.pred_probs:  # given probabilities: no probe
        steps.append(("lp", f"Linear probing ({config.lp_epochs} epochs)"))
    if "rounds" in method.stages:
        for r in range(1, config.rounds + 1):
            steps.append((f"round-{r}", f"Round {r}: cleanse + fine-tune" if method.kind == "turn"
                          else f"Fine-tuning epoch {r}"))
    if "choice" in method.stages:
        if config.turn_option("holdout"):
            steps.append(("choice", "Final model chosen on held-out clean samples"))
        elif config.turn_option("probe_ensemble"):
            steps.append(("choice", "Final classifier: fine-tuned + probe"))
    steps.append(("final", "Final scoring"))
    if "projections" in method.stages and config.projection_methods:
        steps.append(("projections", "Embedding projections"))
    return steps
