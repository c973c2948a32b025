"""The model registry: embedded EfficientNet-Lite0, timm models, Hugging Face models.

No hub is reachable here, so Hugging Face loading is tested on tiny models built from a
config and saved with `save_pretrained` to a temporary folder; the loader reads them with
`from_pretrained`, the same code path a hub id takes.
"""

from __future__ import annotations

import time
import warnings

import numpy as np
import pytest
import timm
import torch
import transformers as tf
from PIL import Image

from turn_backend.models import ModelError, load_model, registry
from turn_backend.models.core import HParams, StageHParams
from turn_backend.models.efficientnet_lite import build_efficientnet_lite0


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    """Never touch the network: HF_HUB_OFFLINE for our loader, and huggingface_hub's
    import-time constant for timm's downloads (which would otherwise retry for ~50 s)."""
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)


def _hp(lp_opt, lp_lr, lp_wd, fft_opt, fft_lr, fft_wd):
    return StageHParams(lp_opt, lp_lr, lp_wd), StageHParams(fft_opt, fft_lr, fft_wd)


# Paper, Table 8, written out independently of the registry.
PAPER_TABLE = {
    "vit": _hp("sgd", 1e-2, 1e-3, "sgd", 1e-2, 1e-5),
    "convnext": _hp("sgd", 1e-1, 1e-4, "adamw", 1e-4, 1e-4),
    "mae": _hp("adamw", 1e-2, 1e-5, "adamw", 1e-4, 1e-3),
    "msn": _hp("sgd", 1e-2, 1e-2, "sgd", 1e-3, 1e-5),
    "clip": _hp("adamw", 1e-3, 1e-6, "adamw", 1e-5, 1e-5),
    "resnet": _hp("adamw", 1e-3, 1e-5, "adamw", 1e-3, 1e-5),
}


def _assert_paper_hparams(hparams: HParams, family: str) -> None:
    assert hparams == registry.PAPER_HPARAMS[family]
    assert (hparams.lp, hparams.fft) == PAPER_TABLE[family]


# ---- Hugging Face: tiny models saved to a folder -------------------------------------

VIT_KW = dict(
    hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
    image_size=32, patch_size=8,
)
MEAN, STD = (0.4, 0.45, 0.5), (0.2, 0.25, 0.3)
CLIP_MEAN, CLIP_STD = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)


def _vit_processor():
    return tf.ViTImageProcessor(size={"height": 32, "width": 32}, image_mean=MEAN, image_std=STD)


def _convnext_processor():
    return tf.ConvNextImageProcessor(size={"shortest_edge": 32}, image_mean=MEAN, image_std=STD)


def _build_vit():
    return tf.ViTModel(tf.ViTConfig(**VIT_KW)), _vit_processor()


def _ref_vit(model, x):
    return model(pixel_values=x).last_hidden_state[:, 0]


def _build_convnext():
    cfg = tf.ConvNextConfig(hidden_sizes=[8, 16, 24, 32], depths=[1, 1, 1, 1], image_size=32)
    return tf.ConvNextModel(cfg), _convnext_processor()


def _ref_pooler(model, x):
    return model(pixel_values=x).pooler_output.flatten(1)


def _build_clip():
    cfg = tf.CLIPConfig(
        text_config=dict(
            hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
            vocab_size=100, max_position_embeddings=16,
        ),
        vision_config=dict(VIT_KW),
        projection_dim=16,
    )
    processor = tf.CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    return tf.CLIPModel(cfg), processor


def _ref_clip(model, x):
    return model.vision_model(pixel_values=x).pooler_output


def _build_mae():
    cfg = tf.ViTMAEConfig(
        **VIT_KW, decoder_hidden_size=16, decoder_num_hidden_layers=1,
        decoder_num_attention_heads=2, decoder_intermediate_size=32,
    )
    assert cfg.mask_ratio == 0.75  # saved with masking on; the loader must turn it off
    return tf.ViTMAEForPreTraining(cfg), _vit_processor()


def _ref_mae(model, x):
    # Mean of the patch tokens with nothing masked, in MAE's own random patch order: the
    # mean does not depend on the order.
    model.config.mask_ratio = 0.0
    return model.vit(pixel_values=x).last_hidden_state[:, 1:].mean(dim=1)


def _build_msn():
    return tf.ViTMSNModel(tf.ViTMSNConfig(**VIT_KW)), _vit_processor()


def _build_resnet():
    cfg = tf.ResNetConfig(embedding_size=8, hidden_sizes=[8, 16, 24, 40], depths=[1, 1, 1, 1], layer_type="basic")
    return tf.ResNetModel(cfg), _convnext_processor()


# name: (builder, reference features, family, feature dim, mean, std)
HF_CASES = {
    "vit": (_build_vit, _ref_vit, "vit", 32, MEAN, STD),
    "convnext": (_build_convnext, _ref_pooler, "convnext", 32, MEAN, STD),
    "clip": (_build_clip, _ref_clip, "clip", 32, CLIP_MEAN, CLIP_STD),
    "vit_mae": (_build_mae, _ref_mae, "mae", 32, MEAN, STD),
    "vit_msn": (_build_msn, _ref_vit, "msn", 32, MEAN, STD),
    "resnet": (_build_resnet, _ref_pooler, "resnet", 40, MEAN, STD),
}


def _save(tmp_path, name, model, processor=None):
    folder = tmp_path / name
    model.save_pretrained(folder)
    if processor is not None:
        processor.save_pretrained(folder)
    return folder


@pytest.mark.parametrize("case", list(HF_CASES))
def test_hf_model_from_saved_folder(tmp_path, case):
    build, reference, family, dim, mean, std = HF_CASES[case]
    torch.manual_seed(0)
    model, processor = build()
    model.eval()
    folder = _save(tmp_path, case, model, processor)

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        loaded = load_model(str(folder))
    ours = [str(w.message) for w in caught if str(w.message).startswith(repr(str(folder)))]
    assert not ours, ours  # no weights missing, the saved processor found

    assert loaded.family == family
    _assert_paper_hparams(loaded.hparams, family)
    assert loaded.extractor.feature_dim == dim
    assert loaded.preprocess.image_size == 32
    assert loaded.preprocess.mean == pytest.approx(mean)
    assert loaded.preprocess.std == pytest.approx(std)
    assert loaded.name == f"hf:{folder}"

    torch.manual_seed(1)
    x = torch.randn(2, 3, loaded.preprocess.image_size, loaded.preprocess.image_size)
    with torch.no_grad():
        features = loaded.extractor(x)
        again = loaded.extractor(x)
        expected = reference(model, x)
    assert features.shape == (2, dim)
    assert features.dtype == torch.float32
    assert torch.isfinite(features).all()
    assert not torch.allclose(features[0], features[1], atol=1e-4)
    assert torch.equal(features, again)  # deterministic (no random MAE masking)
    # The saved weights were loaded and pooled the way the family is meant to be.
    torch.testing.assert_close(features, expected, atol=1e-5, rtol=1e-4)


def test_clip_folder_loads_only_the_vision_tower(tmp_path):
    torch.manual_seed(0)
    model, processor = _build_clip()
    folder = _save(tmp_path, "clip", model, processor)
    loaded = load_model(f"hf:{folder}")  # explicit prefix
    backbone = loaded.extractor.backbone
    assert type(backbone).__name__ == "CLIPVisionModel"
    assert not any(k.startswith("text_model") for k in backbone.state_dict())
    assert loaded.preprocess.interpolation == "bicubic"


def test_mae_loads_without_masking(tmp_path):
    torch.manual_seed(0)
    model, processor = _build_mae()
    loaded = load_model(str(_save(tmp_path, "mae", model, processor)))
    assert loaded.extractor.backbone.config.mask_ratio == 0.0


def test_hf_folder_without_processor_falls_back_to_imagenet_stats(tmp_path):
    torch.manual_seed(0)
    model, _ = _build_vit()
    folder = _save(tmp_path, "vit", model)
    with pytest.warns(UserWarning, match="no saved image processor"):
        loaded = load_model(str(folder))
    assert loaded.preprocess.image_size == 32
    assert loaded.preprocess.mean == pytest.approx((0.485, 0.456, 0.406))
    assert loaded.preprocess.std == pytest.approx((0.229, 0.224, 0.225))
    assert loaded.extractor(torch.randn(1, 3, 32, 32)).shape == (1, 32)


def test_hf_unsupported_model_type(tmp_path):
    folder = tmp_path / "bert"
    config = tf.BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64)
    config.save_pretrained(folder)
    with pytest.raises(ModelError, match="supported Hugging Face model types: .*vit_mae"):
        load_model(str(folder))


def test_hf_folder_without_config(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelError, match="config.json"):
        load_model(f"hf:{tmp_path / 'empty'}")


def test_hf_missing_hub_id_fails_fast():
    start = time.monotonic()
    with pytest.raises(ModelError, match="could not load 'nobody/does-not-exist'.*save_pretrained"):
        load_model("nobody/does-not-exist")
    assert time.monotonic() - start < 10


def test_hf_hub_unreachable_fails_fast(monkeypatch):
    """Without HF_HUB_OFFLINE and without a network, a quick connect check sends the
    loader to the local cache instead of huggingface_hub's retries."""
    import socket

    import huggingface_hub.constants

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    for var in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)

    def no_network(*args, **kwargs):
        raise OSError("network is unreachable")

    monkeypatch.setattr(socket, "create_connection", no_network)
    start = time.monotonic()
    with pytest.raises(ModelError, match="hub is unreachable"):
        load_model("nobody/does-not-exist")
    assert time.monotonic() - start < 10


# ---- the embedded default ------------------------------------------------------------


def test_efficientnet_lite0_features():
    loaded = load_model("efficientnet_lite0")
    assert loaded.family == "efficientnet"
    assert loaded.hparams == registry.PAPER_HPARAMS["efficientnet"]
    assert loaded.preprocess.mean == (0.5, 0.5, 0.5) and loaded.preprocess.std == (0.5, 0.5, 0.5)
    assert loaded.extractor.feature_dim == 1280
    loaded.extractor.eval()
    with torch.no_grad():
        features = loaded.extractor(torch.randn(2, 3, 64, 64))
    assert features.shape == (2, 1280)
    assert torch.isfinite(features).all()


def _sample_photo(name: str) -> torch.Tensor:
    from skimage import data

    image = Image.fromarray(getattr(data, name)()).resize((224, 224), Image.BILINEAR)
    x = torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0).permute(2, 0, 1)
    return (x - 0.5) / 0.5


def test_efficientnet_lite0_imagenet_weights_classify_sample_photos():
    model = build_efficientnet_lite0(with_classifier=True).eval()
    x = torch.stack([_sample_photo("chelsea"), _sample_photo("coffee")])
    with torch.no_grad():
        probs = model(x).softmax(dim=-1)
    cat_top3 = set(probs[0].topk(3).indices.tolist())
    assert cat_top3 <= {285, 282, 281}  # Egyptian cat, tiger cat, tabby
    assert probs[1].argmax().item() == 967  # espresso
    assert probs[1, 967].item() > 0.8  # 0.826 with PIL bilinear resizing


# ---- timm ----------------------------------------------------------------------------


def test_timm_pretrained_weights_unreachable_fails_fast():
    start = time.monotonic()
    with pytest.raises(ModelError, match="resnet18.*local checkpoint"):
        load_model("timm:resnet18")
    assert time.monotonic() - start < 10


@pytest.mark.parametrize("name", ["timm:no_such_model_xyz", "no_such_model_xyz"])
def test_timm_unknown_name(name):
    with pytest.raises(ModelError, match="timm has no model named 'no_such_model_xyz'"):
        load_model(name)


@pytest.fixture(scope="module")
def resnet18_state():
    torch.manual_seed(0)
    source = timm.create_model("resnet18", pretrained=False)  # with its classifier
    return {k: v.clone() for k, v in source.state_dict().items()}


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_timm_local_checkpoint(tmp_path, resnet18_state, suffix):
    path = tmp_path / f"resnet18{suffix}"
    if suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file(resnet18_state, str(path))
    else:
        torch.save(resnet18_state, path)

    loaded = registry.load_timm("resnet18", checkpoint=str(path))
    assert loaded.family == "resnet"
    _assert_paper_hparams(loaded.hparams, "resnet")
    assert loaded.extractor.feature_dim == 512
    assert loaded.preprocess.image_size == 224
    got = loaded.extractor.backbone.state_dict()
    assert set(got) == set(resnet18_state) - {"fc.weight", "fc.bias"}
    for key, value in got.items():
        assert torch.equal(value, resnet18_state[key]), key
    loaded.extractor.eval()
    with torch.no_grad():
        assert loaded.extractor(torch.randn(1, 3, 64, 64)).shape == (1, 512)


def test_timm_checkpoint_wrapped_in_state_dict_key(tmp_path, resnet18_state):
    path = tmp_path / "wrapped.pth"
    torch.save({"state_dict": resnet18_state}, path)
    loaded = load_model("timm:resnet18", checkpoint=str(path))
    assert torch.equal(loaded.extractor.backbone.conv1.weight, resnet18_state["conv1.weight"])


def test_timm_checkpoint_errors(tmp_path):
    with pytest.raises(ModelError, match="does not exist"):
        registry.load_timm("resnet18", checkpoint=str(tmp_path / "missing.pth"))
    unrelated = tmp_path / "unrelated.pth"
    torch.save({"something.else": torch.zeros(3)}, unrelated)
    with pytest.raises(ModelError, match="no weights that fit"):
        registry.load_timm("resnet18", checkpoint=str(unrelated))
    resnet50 = tmp_path / "resnet50.pth"
    torch.save(timm.create_model("resnet50", pretrained=False, num_classes=0).state_dict(), resnet50)
    with pytest.raises(ModelError, match="does not fit timm model 'resnet18'"):
        registry.load_timm("resnet18", checkpoint=str(resnet50))
