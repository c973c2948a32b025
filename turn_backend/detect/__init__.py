"""Detection: which given labels are probably wrong, and why.

Each signal is a pure function in `signals` (arrays in, one clean score per sample out);
`combine.detect_label_issues` runs them all and returns one calibrated clean probability
per sample, each signal's score, the suggested label and the estimated noise matrix::

    from turn_backend.detect import detect_label_issues
    result = detect_label_issues(features, labels)      # features (N, D), labels (N,)
    issues = np.flatnonzero(result.flagged(tau=0.6))    # indices to review
    result.suggested_label[issues], result.noise_counts

`scan_dataset` does the same from a dataset spec and a model name (features extracted,
cached, and a TURN linear probe trained on them).
"""

# Imported on first use (PEP 562): the app reads `detect.result` (no torch) on pages that
# must open fast, and importing this package must not load torch and cleanlab for them.
_EXPORTS = {
    "detect_label_issues": "turn_backend.detect.combine",
    "DetectionResult": "turn_backend.detect.result",
    "SIGNAL_DESCRIPTIONS": "turn_backend.detect.result",
    "scan_dataset": "turn_backend.detect.scan",
    "DetectionInputError": "turn_backend.detect.signals",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'turn_backend.detect' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(_EXPORTS[name]), name)
