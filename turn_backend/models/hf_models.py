"""Hugging Face transformers image models as feature extractors.

`load_hf(name_or_path)` takes a hub id (`google/vit-base-patch16-224`) or a local folder
saved with `save_pretrained`, reads its config, picks the backbone class by
`config.model_type`, and pools one feature vector per image the way the family is meant
to be used. Preprocessing comes from the checkpoint's own image processor.

Remote code is never run (`trust_remote_code=False`); weights load through transformers'
default (safetensors where the checkpoint has them). Where `HF_HUB_OFFLINE` (or
`TRANSFORMERS_OFFLINE`) is set, only local folders and the local cache are used, so a
missing model fails at once instead of retrying the network.
"""

from __future__ import annotations

import os
import socket
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import torch

from turn_backend.models.core import FeatureExtractor, LoadedModel, ModelError, Preprocess
from turn_backend.models.hparams import PAPER_HPARAMS

# Used only where a checkpoint has no saved image processor (see `_preprocess`).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


# ---- pooling per family: (backbone, pixel_values) -> (B, dim) ----------------------------


def _pool_cls(backbone, x: torch.Tensor) -> torch.Tensor:
    # ViT / MSN: last_hidden_state is already through the final LayerNorm; token 0 is CLS.
    return backbone(pixel_values=x).last_hidden_state[:, 0]


def _pool_pooler(backbone, x: torch.Tensor) -> torch.Tensor:
    # ConvNeXt: LayerNorm(global average pool); CLIP: post-LayerNorm CLS; ResNet: the
    # adaptive average pool, (B, C, 1, 1), flattened.
    return backbone(pixel_values=x).pooler_output.flatten(1)


def _pool_mae(backbone, x: torch.Tensor) -> torch.Tensor:
    # MAE: the mean of the patch tokens (CLS excluded). MAE's CLS token gets no training
    # signal during pre-training (the decoder only reconstructs patches), and the MAE
    # paper's fine-tuning recipe uses global average pooling of patch tokens; the mean is
    # also independent of the patch order MAE's embedding shuffles.
    # With mask_ratio = 0 every patch is kept; `noise = arange` keeps them in their
    # original order, so features are deterministic (no random shuffle at feature time).
    patch = backbone.config.patch_size
    ph, pw = (patch, patch) if isinstance(patch, int) else tuple(patch)
    n = (x.shape[-2] // ph) * (x.shape[-1] // pw)
    noise = torch.arange(n, device=x.device, dtype=torch.float32).expand(x.shape[0], n)
    hidden = backbone(pixel_values=x, noise=noise).last_hidden_state
    return hidden[:, 1:].mean(dim=1)


@dataclass(frozen=True)
class _Family:
    family: str  # key into hparams.PAPER_HPARAMS
    model_class: str  # transformers class name
    pool: Callable
    kwargs: tuple = ()  # extra from_pretrained keyword arguments


# model_type -> how to build and pool it.
FAMILIES: dict[str, _Family] = {
    "vit": _Family("vit", "ViTModel", _pool_cls, (("add_pooling_layer", False),)),
    "convnext": _Family("convnext", "ConvNextModel", _pool_pooler),
    # A full CLIP checkpoint (model_type "clip") loads its vision tower only.
    "clip": _Family("clip", "CLIPVisionModel", _pool_pooler),
    "clip_vision_model": _Family("clip", "CLIPVisionModel", _pool_pooler),
    "vit_mae": _Family("mae", "ViTMAEModel", _pool_mae, (("mask_ratio", 0.0),)),
    "vit_msn": _Family("msn", "ViTMSNModel", _pool_cls),
    "resnet": _Family("resnet", "ResNetModel", _pool_pooler),
}


def _offline() -> bool:
    """HF_HUB_OFFLINE / TRANSFORMERS_OFFLINE, read now (huggingface_hub reads it at import)."""
    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        if os.environ.get(var, "").strip().upper() in {"1", "ON", "YES", "TRUE"}:
            return True
    try:
        from huggingface_hub import constants

        return bool(constants.HF_HUB_OFFLINE)
    except Exception:  # noqa: BLE001  # pragma: no cover - huggingface_hub always ships with transformers
        return False


def _hub_reachable(timeout: float = 3.0) -> bool:
    """A quick TCP connect to the hub, so that a machine without a network fails in
    seconds instead of huggingface_hub's ~30 s of retries. Behind a proxy a direct
    connect says nothing, so the check is skipped there."""
    proxies = ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy")
    if any(os.environ.get(v) for v in proxies):
        return True
    try:
        from huggingface_hub import constants

        endpoint = urlparse(constants.ENDPOINT)
    except Exception:  # noqa: BLE001  # pragma: no cover
        endpoint = urlparse("https://huggingface.co")
    host = endpoint.hostname or "huggingface.co"
    port = endpoint.port or (80 if endpoint.scheme == "http" else 443)
    try:
        socket.create_connection((host, port), timeout=timeout).close()
        return True
    except OSError:
        return False


def _feature_dim(config) -> int:
    hidden_sizes = getattr(config, "hidden_sizes", None)
    if hidden_sizes:  # ConvNeXt, ResNet: channels of the last stage
        return int(hidden_sizes[-1])
    if getattr(config, "hidden_size", None):
        return int(config.hidden_size)
    vision = getattr(config, "vision_config", None)
    if vision is not None and getattr(vision, "hidden_size", None):
        return int(vision.hidden_size)
    raise ModelError(f"cannot tell the feature size of model type {config.model_type!r}")


def _get(obj, key):
    """A key of a size dict (a plain dict or transformers' SizeDict)."""
    if obj is None:
        return None
    if isinstance(obj, dict):
        return obj.get(key)
    return getattr(obj, key, None)


def _interpolation(resample) -> str:
    if resample is None:
        return "bilinear"
    name = getattr(resample, "name", None)
    if name is None:
        name = {0: "nearest", 1: "lanczos", 2: "bilinear", 3: "bicubic"}.get(int(resample), "bilinear")
    name = str(name).lower()
    for known in ("bicubic", "bilinear", "nearest"):
        if known in name:
            return known
    return "bilinear"


def _triple(values, default) -> tuple[float, float, float]:
    if values is None:
        return default
    if isinstance(values, (int, float)):
        return (float(values),) * 3
    values = [float(v) for v in values]
    return tuple(values * 3 if len(values) == 1 else values[:3])


def _image_size_from_processor(processor) -> int | None:
    # The size the network sees: the centre crop where the processor crops, else the resize.
    if getattr(processor, "do_center_crop", False):
        crop = getattr(processor, "crop_size", None)
        size = _get(crop, "height") or _get(crop, "shortest_edge")
        if size:
            return int(size)
    size = getattr(processor, "size", None)
    if isinstance(size, int):
        return size
    value = _get(size, "shortest_edge") or _get(size, "height")
    return int(value) if value else None


def _config_image_size(config) -> int:
    size = getattr(config, "image_size", None)
    if size is None and getattr(config, "vision_config", None) is not None:
        size = getattr(config.vision_config, "image_size", None)
    if isinstance(size, (list, tuple)):
        size = size[0]
    return int(size) if size else 224


def _preprocess(name: str, config, offline: bool) -> Preprocess:
    """The model's own image processor; ImageNet statistics only where none is saved."""
    from transformers import AutoImageProcessor

    try:
        processor = AutoImageProcessor.from_pretrained(
            name, trust_remote_code=False, local_files_only=offline
        )
    except Exception as exc:  # noqa: BLE001 - no preprocessor_config.json in the folder / repository
        # Fallback: the config's image size with ImageNet mean/std. Right for most
        # ImageNet-trained checkpoints, wrong for CLIP-style statistics; a warning says so.
        warnings.warn(
            f"{name!r} has no saved image processor ({type(exc).__name__}); "
            "using the config's image size with ImageNet mean/std",
            stacklevel=3,
        )
        size = _config_image_size(config)
        return Preprocess(image_size=size, mean=IMAGENET_MEAN, std=IMAGENET_STD)
    size = _image_size_from_processor(processor) or _config_image_size(config)
    return Preprocess(
        image_size=int(size),
        mean=_triple(getattr(processor, "image_mean", None), IMAGENET_MEAN),
        std=_triple(getattr(processor, "image_std", None), IMAGENET_STD),
        interpolation=_interpolation(getattr(processor, "resample", None)),
    )


def _unreachable(name: str, exc: Exception, note: str = "") -> ModelError:
    reason = " ".join(str(exc).split()) or type(exc).__name__
    return ModelError(
        f"could not load {name!r} from the Hugging Face hub or a local folder: {note}{reason}; "
        "give a local folder saved with save_pretrained (or check the network / HF_HUB_OFFLINE)"
    )


def load_hf(name_or_path: str) -> LoadedModel:
    """A transformers image backbone by hub id or local folder, as a `LoadedModel`."""
    import transformers
    from transformers import AutoConfig

    name = str(name_or_path)
    local = Path(name).expanduser()
    if local.is_dir():
        if not (local / "config.json").is_file():
            raise ModelError(f"folder {name} has no config.json; save the model with save_pretrained")
        name = str(local)
    offline = _offline()
    hub_note = ""
    if not offline and not local.is_dir() and not _hub_reachable():
        # No network: the local cache is all there is.
        offline = True
        hub_note = "the hub is unreachable from this machine, and "

    try:
        config = AutoConfig.from_pretrained(name, trust_remote_code=False, local_files_only=offline)
    except Exception as exc:  # unknown id, no network, offline cache miss, bad config
        raise _unreachable(name, exc, hub_note) from exc

    model_type = getattr(config, "model_type", None)
    spec = FAMILIES.get(model_type)
    if spec is None:
        raise ModelError(
            f"{name!r} is a {model_type!r} model; supported Hugging Face model types: "
            + ", ".join(sorted(FAMILIES))
        )

    model_class = getattr(transformers, spec.model_class)
    # transformers logs a table of unexpected keys (a full CLIP checkpoint's text tower,
    # an MAE decoder) that are expected here; missing keys are reported below instead.
    verbosity = transformers.logging.get_verbosity()
    transformers.logging.set_verbosity_error()
    try:
        backbone, info = model_class.from_pretrained(
            name,
            trust_remote_code=False,
            local_files_only=offline,
            dtype=torch.float32,
            output_loading_info=True,
            **dict(spec.kwargs),
        )
    except Exception as exc:
        raise _unreachable(name, exc, hub_note) from exc
    finally:
        transformers.logging.set_verbosity(verbosity)

    missing = list(info.get("missing_keys", []) or [])
    total = len(backbone.state_dict())
    if missing and len(missing) * 2 > total:
        raise ModelError(
            f"{name!r}: {len(missing)} of {total} weights of {spec.model_class} are missing from "
            "the checkpoint; it does not hold this model's weights"
        )
    if missing:
        warnings.warn(
            f"{name!r}: {len(missing)} weights were not in the checkpoint and start random: "
            + ", ".join(missing[:5]),
            stacklevel=2,
        )
    backbone.eval()

    dim = _feature_dim(backbone.config)
    preprocess = _preprocess(name, config, offline)
    return LoadedModel(
        name=f"hf:{name_or_path}",
        extractor=FeatureExtractor(backbone, dim, spec.pool),
        preprocess=preprocess,
        hparams=PAPER_HPARAMS[spec.family],
        family=spec.family,
    )
