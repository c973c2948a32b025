"""Pure helpers for the audit pages: arrays in, arrays / DataFrames out, no Streamlit, no run
folder. One module per concern; the package exports each module's public names, so a page
writes `from turn_backend import analysis as an` and `an.ThresholdIndex`.

- `threshold`: `ThresholdIndex` (per-class sorted clean probabilities), `selection_sizes`,
  `flagged_share`, `tau_sweep` (true precision / recall / F1 / purity over a tau grid).
- `gmm_curves`: TURN's per-class GMM in loss units, for histograms and the tau crossing.
- `maps`: the Embeddings page's frames, colourings and selections.
- `review_queue`: `ReviewIndex` (the queue sorted once per tau), decision codes, card texts.
- `class_health`: per-class health and the row-normalised noise matrix.

What the pages read from run folders is assembled in `turn_backend.run_views`.
"""

from turn_backend.analysis.class_health import class_health, confused_partners, noise_rates, recount_noise_counts
from turn_backend.analysis.gmm_curves import (
    clean_posterior,
    component_densities,
    fit_is_usable,
    histogram_with_fit,
    posterior_crossing,
)
from turn_backend.analysis.maps import (
    COLOUR_OPTIONS,
    MAX_MAP_POINTS,
    OVERLAY_POINTS,
    RASTER_SHAPE,
    category_raster,
    colour_options,
    coords_by_index,
    in_selection,
    map_extent,
    overlay_rows,
    projection_frame,
    selected_rows,
    selection_geometry,
    value_raster,
    warm_lasso,
)
from turn_backend.analysis.review_queue import (
    ACTION_CODES,
    ACTIONS_BY_CODE,
    FLAG_KINDS,
    KIND_BITS,
    SIGNAL_LABELS,
    ReviewIndex,
    bulk_accept,
    decision_text,
    paginate,
)
from turn_backend.analysis.threshold import (
    ThresholdIndex,
    default_tau_grid,
    flagged_share,
    selection_sizes,
    tau_sweep,
    true_noise_rate,
)

__all__ = [
    "ACTION_CODES", "ACTIONS_BY_CODE", "COLOUR_OPTIONS", "FLAG_KINDS", "KIND_BITS", "MAX_MAP_POINTS", "OVERLAY_POINTS",
    "RASTER_SHAPE", "SIGNAL_LABELS", "ReviewIndex", "ThresholdIndex", "bulk_accept", "category_raster",
    "class_health", "clean_posterior", "colour_options", "component_densities", "confused_partners",
    "coords_by_index", "decision_text", "default_tau_grid", "fit_is_usable", "flagged_share",
    "histogram_with_fit", "in_selection", "map_extent", "noise_rates", "overlay_rows", "paginate",
    "posterior_crossing", "projection_frame", "recount_noise_counts", "selected_rows", "selection_geometry",
    "selection_sizes",
    "tau_sweep", "true_noise_rate", "value_raster", "warm_lasso",
]
