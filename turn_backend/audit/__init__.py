"""Dataset audit beyond label errors: duplicates, train/test leaks, outliers, look-alikes.

Built on the cached pre-trained features, so no extra pass over the images is needed
(only the content hashes read the raw bytes). `core` holds the detectors (arrays in,
arrays out), `stage` the run stage that writes a run folder's `audit/`.
"""

from turn_backend.audit.core import (
    content_hashes,
    exact_duplicate_of,
    exact_matches,
    knn_search,
    l2_normalise,
    neighbours,
    outlier_scores,
    robust_threshold,
    search_matrix,
)
from turn_backend.audit.stage import AuditSettings, audit_tables, run_audit

__all__ = [
    "AuditSettings", "audit_tables", "content_hashes", "exact_duplicate_of", "exact_matches", "knn_search",
    "l2_normalise", "neighbours", "outlier_scores", "robust_threshold", "run_audit", "search_matrix",
]
