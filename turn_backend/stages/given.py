"""Given features and probabilities in a run (turn_backend.given_inputs): what the data,
features, probe, final and metrics stages do instead of loading and running the image model.

- `features` given: no image model is loaded; the lp-* methods probe the given features
  (config.py refuses the fine-tuning methods). Without `test_features` the dataset's test
  split is left out of the run, so no test accuracy is measured.
- `pred_probs` given: they are the classifier, out-of-sample. No probe is trained; the final
  stage scores the labels with them (their cross-entropy and TURN's per-class GMM on it, and
  in the detection layer both the robust classifier's probabilities and the out-of-fold
  probe's), and no test accuracy is measured (there is no classifier to test).

The files are checked against the dataset and copied into the run folder (`given/`), in the
training set's order, so a run survives the originals moving, and its records say where
they came from (config.json, the event log, metrics.json `given_inputs`).
"""

from __future__ import annotations

import time

import numpy as np

from turn_backend.data.core import DatasetBundle, ImageSet
from turn_backend.given_inputs import GivenInputError, load_feature_pair, load_pred_probs
from turn_backend.io import atomic_save_npy
from turn_backend.stages.context import RunContext


def without_unfeatured_test(ctx: RunContext, bundle: DatasetBundle) -> DatasetBundle:
    """The bundle the run uses: its test split left out where the training features are given
    and the test features are not (nothing could compute the test split's)."""
    cfg = ctx.config
    if cfg.test_features and bundle.test is None:
        raise GivenInputError(f"test features were given ({cfg.test_features}), but the dataset has no test split")
    if not cfg.features or cfg.test_features or bundle.test is None:
        return bundle
    ctx.log("data", f"the test split ({len(bundle.test):,} images) is left out: features were given for the "
            "training set only (no --test-features), so test accuracy is not measured")
    return DatasetBundle(name=bundle.name, train=bundle.train, test=None, skipped=bundle.skipped, info=bundle.info)


def _full_train(ctx: RunContext) -> ImageSet:
    """The training set the given files describe: before review removed samples from it."""
    return ctx.train if ctx.reviewed is None else ctx.reviewed.full_train


def _run_rows(ctx: RunContext, values: np.ndarray) -> np.ndarray:
    """`values` of the full training set, cut to the run's training rows."""
    return values if ctx.reviewed is None else values[ctx.reviewed.kept]


def read_features(ctx: RunContext) -> None:
    """The features stage of a run with given features: check and store them."""
    cfg, folder = ctx.config, ctx.folder
    t0 = time.time()
    paths = {"train": folder.given_features_path("train"), "test": folder.given_features_path("test")}
    if not ctx.stage_done("features") and ctx.rt.is_main:
        ctx.status(stage="features", stage_label="Reading the given features")
        train, test = load_feature_pair(cfg.features, cfg.test_features, _full_train(ctx), ctx.test)
        train = _run_rows(ctx, train)
        folder.given_dir.mkdir(parents=True, exist_ok=True)
        atomic_save_npy(paths["train"], train)
        if test is not None:
            atomic_save_npy(paths["test"], test)
        ctx.log("features", f"features given: {train.shape[0]} train x {train.shape[1]} dims from {cfg.features}"
                + (f", test from {cfg.test_features}" if cfg.test_features else ""), summary=True,
                n_train=int(train.shape[0]), n_dims=int(train.shape[1]), given=cfg.features,
                given_test=cfg.test_features)
        folder.mark_completed("features")
    ctx.rt.barrier()
    ctx.feats = np.load(paths["train"], mmap_mode="r")
    ctx.test_feats = np.load(paths["test"], mmap_mode="r") if cfg.test_features else None
    ctx.add_time("features", t0)


def store_pred_probs(ctx: RunContext) -> None:
    """Check the given probabilities against the dataset and store them, in the data stage:
    a wrong file fails the run before features are extracted, not after."""
    path = ctx.folder.given_dir / ctx.folder.GIVEN_PRED_PROBS
    if not ctx.config.pred_probs or path.exists():
        return
    probs = _run_rows(ctx, load_pred_probs(ctx.config.pred_probs, _full_train(ctx)))
    if ctx.rt.is_main:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_save_npy(path, probs)
        ctx.log("data", f"the given probabilities ({ctx.config.pred_probs}) are the classifier: no probe is "
                "trained, test accuracy is not measured")


def given_logits(ctx: RunContext) -> np.ndarray:
    """The final stage's logits from the stored given probabilities: their log, so that the
    cross-entropy of a label is minus the log of its given probability."""
    probs = np.load(ctx.folder.given_dir / ctx.folder.GIVEN_PRED_PROBS)
    return np.log(np.clip(probs, 1e-12, None))


def given_summary(ctx: RunContext) -> dict:
    """metrics.json's record of the given files (empty for a run on the image model)."""
    cfg = ctx.config
    if not (cfg.features or cfg.pred_probs):
        return {}
    given = {"features": cfg.features, "test_features": cfg.test_features, "pred_probs": cfg.pred_probs}
    if ctx.feats is not None:
        given["n_dims"] = int(ctx.feats.shape[1])
    if cfg.pred_probs or not cfg.test_features:
        given["test_accuracy"] = ("not measured: the given probabilities are the classifier" if cfg.pred_probs
                                  else "not measured: no test features given")
    return {"given_inputs": given}


# The reliability check's fixes speak of the image model; with given features the user's own
# model made them, so the fixes are about that model.
GIVEN_FEATURE_FIXES = {
    "a larger image size": "features from another model, closer to this kind of image",
    "another pre-trained model, closer to this kind of image": "features from another model, closer to this kind "
                                                               "of image",
    "fine-tuning (TURN+) or a stronger model": "features from a stronger model (or TURN+ on the images themselves)",
}


def reliability_for_given_features(reliability: dict) -> dict:
    """`reliability` (detect.estimates.judge_reliability) with fixes a run on given features can act on."""
    fixes = [GIVEN_FEATURE_FIXES.get(fix, fix) for fix in reliability.get("fixes", [])]
    return {**reliability, "fixes": list(dict.fromkeys(fixes))}
