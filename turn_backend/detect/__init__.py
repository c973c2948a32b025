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

from turn_backend.detect.combine import detect_label_issues
from turn_backend.detect.result import SIGNAL_DESCRIPTIONS, DetectionResult
from turn_backend.detect.scan import scan_dataset
from turn_backend.detect.signals import DetectionInputError

__all__ = ["DetectionInputError", "DetectionResult", "SIGNAL_DESCRIPTIONS", "detect_label_issues", "scan_dataset"]
