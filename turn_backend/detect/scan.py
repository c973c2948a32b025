"""Detection from a dataset and a model name: features extracted (and cached), TURN's linear
probe (GCE) trained on them, then every signal and the combination."""

from __future__ import annotations

from turn_backend.config import RunConfig
from turn_backend.detect.combine import detect_label_issues
from turn_backend.detect.result import DetectionResult
from turn_backend.detect.signals import softmax
from turn_backend.engine import Runtime, extract_features, head_logits, train_linear_probe
from turn_backend.features import feature_cache_path
from turn_backend.models.core import Preprocess
from turn_backend.models.registry import load_model
from turn_backend.rundata import load_run_data


def scan_dataset(dataset: dict, model: str = "efficientnet_lite0", *, image_size: int | None = None,
                 device: str = "auto", batch_size: int = 128, lp_epochs: int = 20, seed: int = 0) -> DetectionResult:
    """`detect_label_issues` on the training split of `dataset` (a spec as `turn run` takes it,
    e.g. {"kind": "folder", "path": "photos/"}), with features of `model` (a registry name,
    timm name, Hugging Face id or folder). Rows follow the dataset's training order."""
    bundle = load_run_data(RunConfig(dataset=dataset, noise={"kind": "none"}, model=model))
    train = bundle.train
    loaded = load_model(model, None, pretrained=True)
    pre = loaded.preprocess
    if image_size:
        pre = Preprocess(image_size, pre.mean, pre.std, pre.interpolation)
    rt = Runtime(device, "auto")
    path = feature_cache_path(train, loaded.name, None, True, pre, "train")
    feats = extract_features(loaded.extractor, train, pre, path, rt, batch_size)
    head, _ = train_linear_probe(feats, train.labels, train.num_classes, loaded.hparams.lp, "gce", lp_epochs,
                                 batch_size, seed)
    return detect_label_issues(feats, train.labels, train.num_classes, model_probs=softmax(head_logits(head, feats)),
                               device=str(rt.device), seed=seed)
