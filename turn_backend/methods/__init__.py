"""Training methods, one module per family, registered by name (see `registry`).

    from turn_backend.methods import get_method, list_methods
    get_method("turn+").stages   # the run-folder stages the orchestrator runs for it

Importing this package registers every method; it does not import torch.
"""

from turn_backend.methods.registry import Method, get_method, list_methods, register_method, run_standalone

# registration order is the order the CLI, the app and `turn bench` list them in
from turn_backend.methods import turn, linear_probe, fine_tune, dividemix_lp, unicon_lp, cleanlab_fft  # noqa: F401  isort: skip

__all__ = ["Method", "get_method", "list_methods", "register_method", "run_standalone"]
