"""Stage "audit": duplicates, train/test leaks and outliers on the pre-trained features
(turn_backend.audit). It adds findings; it must not cost the user the training run."""

from __future__ import annotations

import time

from turn_backend.audit import run_audit
from turn_backend.stages.context import RunContext


def audit(ctx: RunContext) -> None:
    folder = ctx.folder
    if ctx.stage_done("audit"):
        return
    t0 = time.time()
    if ctx.rt.is_main:
        try:
            meta = run_audit(folder.audit_dir, ctx.train, ctx.feats, ctx.test, ctx.test_feats,
                             progress_for=lambda label: ctx.progress("audit", label))
        except (ValueError, OSError, ImportError, MemoryError) as exc:
            ctx.log("audit", f"audit skipped: {type(exc).__name__}: {exc}")
        else:
            folder.mark_completed("audit")
            ctx.log("audit", f"audit: {meta['n_duplicates']} duplicate(s) ({meta['n_label_conflicts']} with "
                    f"another label), {meta['n_test_duplicates']} in the test set, "
                    f"{meta['n_outliers']} outlier(s)", **meta)
    ctx.add_time("audit", t0)
    ctx.rt.barrier()
