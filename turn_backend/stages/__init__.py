"""The stages of a run, each a function of a `RunContext` (turn_backend.stages.context).

A method (turn_backend.methods) names the stages it runs; `runner` runs them in that order.
Each stage records what it made in the run folder and marks itself completed there, so a
resumed run skips what is done; every stage seeds from (config.seed, stage), so a resumed
run ends with the same result as an uninterrupted one.
"""
