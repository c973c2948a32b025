"""The data pipeline: uint8 batches, resize / crop / flip / normalise on the device.

The batched preprocessing must give the model what the per-image torchvision transform
gave it (checked against that transform on grey, colour, RGBA, up- and downscaled
images), array and file datasets must give the same features, and the training
augmentation must follow RandomResizedCrop's rules and be reproducible.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torchvision.transforms import v2

from turn_backend.data.core import ImageSet
from turn_backend.models.core import Preprocess
from turn_backend.pipeline import (
    CROP_RATIO,
    CROP_SCALE,
    BatchPreprocess,
    ImageTensorDataset,
    batch_preprocess,
    crop_resize,
    make_loader,
    random_crop_boxes,
)

MEAN, STD = (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)


def _array_set(arrays: np.ndarray) -> ImageSet:
    n = len(arrays)
    return ImageSet(ids=[f"s{i}" for i in range(n)], labels=np.arange(n) % 2, class_names=["a", "b"], arrays=arrays)


def _per_image_reference(arr: np.ndarray, pre: Preprocess) -> torch.Tensor:
    """The per-image transform the pipeline replaced: v2 resize + centre crop + scale + normalise."""
    interp = {"bilinear": v2.InterpolationMode.BILINEAR, "bicubic": v2.InterpolationMode.BICUBIC}[pre.interpolation]
    t = torch.from_numpy(arr)
    t = t[None].expand(3, -1, -1) if t.ndim == 2 else t.permute(2, 0, 1)[:3]
    transform = v2.Compose([v2.Resize(pre.image_size, interpolation=interp, antialias=True),
                            v2.CenterCrop(pre.image_size), v2.ToDtype(torch.float32, scale=True),
                            v2.Normalize(pre.mean, pre.std)])
    return transform(t)


def _batch(images: ImageSet, pre: Preprocess, train: bool = False, seed: int = 0) -> torch.Tensor:
    loader = make_loader(ImageTensorDataset(images, pre, train=train), 64, False, 0, 0)
    (x, _, _), = list(loader)
    assert x.dtype == torch.uint8  # the loader hands raw bytes on; the device does the rest
    return BatchPreprocess(pre, train, geometry=images.arrays is not None, seed=seed)(x)


@pytest.mark.parametrize("shape, size, interpolation", [
    ((6, 28, 28), 48, "bilinear"),      # grey, upscaled (the demo)
    ((5, 30, 40, 3), 24, "bilinear"),   # colour, not square, downscaled (anti-aliased)
    ((4, 20, 20, 4), 32, "bicubic"),    # RGBA: the alpha channel is dropped
    ((3, 17, 33, 1), 16, "bilinear"),   # one channel stored as (H, W, 1), odd crop offsets
])
def test_batched_eval_preprocessing_matches_the_per_image_transform(shape, size, interpolation):
    arrays = np.random.default_rng(0).integers(0, 256, size=shape, dtype=np.uint8)
    pre = Preprocess(size, MEAN, STD, interpolation)
    got = _batch(_array_set(arrays), pre)
    want = torch.stack([_per_image_reference(a, pre) for a in arrays])
    assert got.shape == want.shape == (len(arrays), 3, size, size)
    # the per-image transform rounds the resized image to uint8 (half a grey level = 0.004 here)
    assert (got - want).abs().max().item() < 0.02
    assert (got - want).abs().mean().item() < 0.004


def test_crop_resize_samples_where_interpolate_does():
    x = torch.rand(2, 3, 12, 10)
    full = torch.tensor([[0.0, 0.0, 10.0, 12.0]] * 2)
    want = F.interpolate(x, size=(20, 20), mode="bilinear", align_corners=False)
    assert torch.allclose(crop_resize(x, full, 20), want, atol=1e-5)
    halves = torch.tensor([[0.0, 0.0, 5.0, 12.0], [5.0, 0.0, 10.0, 12.0]])  # left half, right half
    got = crop_resize(x, halves, 24)
    left = F.interpolate(x[:1, :, :, :5], size=(24, 24), mode="bilinear")[0]
    right = F.interpolate(x[1:, :, :, 5:], size=(24, 24), mode="bilinear")[0]
    # inside the box, the same samples as cropping first; the two output columns nearest the cut
    # read the pixel across it (cropping first repeats the edge pixel instead)
    assert torch.allclose(got[0][..., :22], left[..., :22], atol=1e-5)
    assert torch.allclose(got[1][..., 2:], right[..., 2:], atol=1e-5)
    assert not torch.allclose(got[0][..., 22:], left[..., 22:], atol=1e-5)
    # a box larger than the output is averaged (anti-aliased): a checkerboard turns grey
    board = (torch.arange(16)[:, None] + torch.arange(16)[None]) % 2
    grey = crop_resize(board.float()[None, None], torch.tensor([[0.0, 0.0, 16.0, 16.0]]), 4)
    assert torch.allclose(grey, torch.full_like(grey, 0.5), atol=1e-6)


def test_random_crop_boxes_follow_random_resized_crop():
    gen = torch.Generator().manual_seed(0)
    boxes = random_crop_boxes(2000, 28, 28, gen)
    w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    assert (boxes[:, 0] >= 0).all() and (boxes[:, 1] >= 0).all()
    assert (boxes[:, 2] <= 28).all() and (boxes[:, 3] <= 28).all()
    area = w * h / 28**2
    # rounding the sides to whole pixels moves area and ratio a little past the drawn range
    assert area.min() >= CROP_SCALE[0] - 0.07 and area.max() <= 1.0
    assert (w / h).min() >= CROP_RATIO[0] - 0.08 and (w / h).max() <= CROP_RATIO[1] + 0.08
    assert len(set(map(tuple, boxes.tolist()))) > 100  # crops vary
    again = random_crop_boxes(2000, 28, 28, torch.Generator().manual_seed(0))
    assert torch.equal(boxes, again)
    # an image so wide that no drawn crop fits: torchvision's fallback, the centred 4:3 crop
    wide = random_crop_boxes(3, 10, 100, torch.Generator().manual_seed(0))
    assert wide.tolist() == [[43.0, 0.0, 56.0, 10.0]] * 3


def test_training_batches_are_augmented_and_reproducible():
    arrays = np.zeros((64, 28, 28), dtype=np.uint8)
    arrays[:, :, :7] = 255  # a bright stripe on the left: a flip moves it to the right
    images = _array_set(arrays)
    pre = Preprocess(48, MEAN, STD)
    a, b = _batch(images, pre, train=True, seed=1), _batch(images, pre, train=True, seed=1)
    assert a.shape == (64, 3, 48, 48) and torch.equal(a, b)
    assert not torch.equal(a, _batch(images, pre, train=True, seed=2))
    left, right = a[:, 0, :, :8].mean((1, 2)), a[:, 0, :, -8:].mean((1, 2))
    flipped = right > left
    assert 10 < int(flipped.sum()) < 54  # about half flipped
    assert a.min() >= -1 - 1e-6 and a.max() <= 1 + 1e-6  # normalised with mean = std = 0.5


def test_loader_batches_carry_labels_and_indices(tmp_path):
    arrays = np.arange(10 * 4 * 4, dtype=np.uint8).reshape(10, 4, 4)
    images = _array_set(arrays)
    index = np.array([7, 2, 9, 4])
    labels = np.array([1, 0, 1, 1, 0, 0, 1, 1, 0, 1])
    ds = ImageTensorDataset(images, Preprocess(4, MEAN, STD), train=False, index=index, labels=labels)
    x, y, idx = next(iter(make_loader(ds, 3, True, 0, 0)))
    assert x.shape == (3, 1, 4, 4) and x.dtype == torch.uint8
    for row, i in zip(x, idx.tolist()):
        assert i in index and torch.equal(row[0], torch.from_numpy(arrays[i]))
    assert y.tolist() == labels[idx.numpy()].tolist()
    single = ds[1]
    assert single[2] == 2 and single[1] == labels[2] == 1 and single[0].shape == (1, 4, 4)


def test_array_and_file_datasets_give_the_same_features(tmp_path, turn_cache_dir, monkeypatch):
    """The same images as an array and as PNG files (decoded in worker processes) go through
    the two halves of the pipeline; the frozen model's features agree."""
    from turn_backend.data.demo import load_demo
    from turn_backend.engine import Runtime, extract_features
    from turn_backend.models.registry import load_model

    monkeypatch.setenv("TURN_CACHE_DIR", str(turn_cache_dir))
    demo = load_demo(100, 10).train.subset(np.arange(0, 100, 10))
    paths = []
    for i, arr in enumerate(demo.arrays):
        path = tmp_path / f"img{i}.png"
        Image.fromarray(arr).save(path)
        paths.append(str(path))
    files = ImageSet(ids=demo.ids, labels=demo.labels, class_names=demo.class_names, paths=paths)
    loaded = load_model("efficientnet_lite0")
    pre = Preprocess(48, loaded.preprocess.mean, loaded.preprocess.std, loaded.preprocess.interpolation)
    rt = Runtime("cpu")
    from_arrays = np.asarray(extract_features(loaded.extractor, demo, pre, tmp_path / "a.npy", rt, 4))
    from_files = np.asarray(extract_features(loaded.extractor, files, pre, tmp_path / "f.npy", rt, 4, num_workers=2))
    assert from_arrays.shape == from_files.shape == (10, loaded.extractor.feature_dim)
    a = from_arrays / np.linalg.norm(from_arrays, axis=1, keepdims=True)
    f = from_files / np.linalg.norm(from_files, axis=1, keepdims=True)
    cos = a @ f.T
    # the file path rounds the resized image to uint8 (half a grey level), the array path does not
    assert np.diag(cos).min() > 0.995
    assert (cos.argmax(1) == np.arange(10)).all()  # each image closest to itself, by far
    assert np.diag(cos).min() - (cos - 2 * np.eye(10)).max() > 0.05


def test_feature_cache_path_is_shared_across_labels_not_models(tmp_path, monkeypatch):
    from turn_backend.features import feature_cache_path

    monkeypatch.setenv("TURN_CACHE_DIR", str(tmp_path))
    images = _array_set(np.zeros((4, 8, 8), dtype=np.uint8))
    relabelled = images.with_labels(np.array([1, 1, 0, 0]), None)
    pre = Preprocess(48, MEAN, STD)
    path = feature_cache_path(images, "efficientnet_lite0", None, True, pre, "train")
    assert path.parent == tmp_path / "features" and path.name.startswith("train-")
    assert feature_cache_path(relabelled, "efficientnet_lite0", None, True, pre, "train") == path
    for other in (feature_cache_path(images, "resnet18", None, True, pre, "train"),
                  feature_cache_path(images, "efficientnet_lite0", None, False, pre, "train"),
                  feature_cache_path(images, "efficientnet_lite0", None, True, Preprocess(64, MEAN, STD), "train")):
        assert other != path


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_device_preprocessing_on_cuda_matches_cpu():
    arrays = np.random.default_rng(1).integers(0, 256, size=(8, 28, 28), dtype=np.uint8)
    pre = Preprocess(48, MEAN, STD)
    x = torch.from_numpy(arrays)[:, None]
    cpu = BatchPreprocess(pre, False, geometry=True)(x)
    gpu = BatchPreprocess(pre, False, geometry=True, channels_last=True)(x.cuda())
    assert gpu.is_contiguous(memory_format=torch.channels_last)
    assert torch.allclose(gpu.cpu(), cpu, atol=1e-4)
    train_cpu = BatchPreprocess(pre, True, geometry=True, seed=3)(x)
    train_gpu = BatchPreprocess(pre, True, geometry=True, seed=3)(x.cuda())
    assert torch.allclose(train_gpu.cpu(), train_cpu, atol=1e-4)  # same crops and flips on any device


def test_shared_maps_are_keyed_by_features_subset_and_seed(tmp_path, monkeypatch):
    from turn_backend.features import before_map_files, copy_files, shared_maps_dir

    monkeypatch.setenv("TURN_CACHE_DIR", str(tmp_path / "cache"))
    features = tmp_path / "cache" / "features" / "train-abc.npy"
    key = shared_maps_dir(features, np.arange(5), seed=0)
    assert key == shared_maps_dir(features, np.arange(5), seed=0)
    assert len({key, shared_maps_dir(features, np.arange(4), 0), shared_maps_dir(features, np.arange(5), 1),
                shared_maps_dir(features.with_name("train-xyz.npy"), np.arange(5), 0)}) == 4
    names = before_map_files("train", ["tsne", "umap"])
    assert names == ["train_pca_before.npy", "train_before_tsne.npy", "train_before_umap.npy"]
    run = tmp_path / "run"
    run.mkdir()
    for name in names[:2]:
        np.save(run / name, np.ones(3))
    assert not copy_files(names, run, key) and not key.exists()  # one missing: nothing half-copied
    np.save(run / names[2], np.zeros(3))
    assert copy_files(names, run, key) and sorted(p.name for p in key.iterdir()) == sorted(names)


class LayoutSensitive(torch.nn.Module):
    """A 3x3 convolution and a BatchNorm that sleeps per forward when its weights are in `slow`."""

    def __init__(self, slow: torch.memory_format) -> None:
        super().__init__()
        self.conv, self.bn, self.slow, self.calls = torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4), slow, 0

    def forward(self, x):
        import time

        self.calls += 1
        if self.conv.weight.is_contiguous(memory_format=self.slow):
            time.sleep(0.02)
        return self.bn(self.conv(x))


def test_the_weights_layout_is_the_one_that_runs_faster_and_measuring_changes_nothing(monkeypatch):
    from turn_backend import engine
    from turn_backend.engine import Runtime, fastest_memory_format, to_device

    rt = Runtime("cpu")
    for slow, expected in ((torch.channels_last, torch.contiguous_format),
                           (torch.contiguous_format, torch.channels_last)):
        monkeypatch.setattr(engine, "_MEMORY_FORMATS", {})  # the same class and size: a fresh process each
        model = LayoutSensitive(slow)
        model.train()
        model.bn.eval()  # frozen statistics, as fine-tuning keeps them
        before = {k: v.clone() for k, v in model.state_dict().items()}
        assert fastest_memory_format(model, rt, 8, batch_size=2, measure=True) == expected
        assert model.training and not model.bn.training  # modes restored
        assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # no statistics moved
        calls = model.calls
        assert fastest_memory_format(model, rt, 8, batch_size=2, measure=True) == expected  # once per process
        assert model.calls == calls
    # on the CPU nothing is timed: channels-last, as measured there
    model = to_device(LayoutSensitive(torch.channels_last), rt, 8)
    assert model.calls == 0 and model.conv.weight.is_contiguous(memory_format=torch.channels_last)


def test_a_model_that_fails_the_timing_keeps_channels_last_and_the_run_goes_on(monkeypatch):
    from turn_backend import engine

    class FailsAtTheProbe(torch.nn.Module):  # e.g. out of memory at the probe's batch
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 4, 3)

        def forward(self, x):
            raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(engine, "_MEMORY_FORMATS", {})
    model = FailsAtTheProbe().train()
    assert engine.fastest_memory_format(model, engine.Runtime("cpu"), 8, measure=True) == torch.channels_last
    assert model.training  # its mode restored


def test_training_batches_are_nchw_and_a_channels_last_model_takes_them():
    from turn_backend.engine import Runtime, to_device

    pre = Preprocess(16, MEAN, STD)
    images = ImageSet(ids=["a0", "b0"], arrays=np.zeros((2, 20, 20), np.uint8), labels=np.array([0, 1]),
                      class_names=["a", "b"])
    x = batch_preprocess(images, pre, True)(torch.zeros(2, 1, 20, 20, dtype=torch.uint8))
    assert x.shape == (2, 3, 16, 16) and x.is_contiguous()
    conv = to_device(torch.nn.Conv2d(3, 4, 3), Runtime("cpu"), 16)
    assert conv(x).is_contiguous(memory_format=torch.channels_last)  # the weights decide the layout


@pytest.mark.slow  # over 10 s on 2 busy cores: in the full suite, not the fast tier
def test_every_process_takes_the_main_processs_layout(tmp_path):
    import subprocess
    import sys

    script = tmp_path / "layout.py"
    script.write_text(
        "import json, os, sys, time, torch\n"
        f"sys.path.insert(0, {str(Path(__file__).parent)!r})\n"
        "from test_pipeline import LayoutSensitive\n"
        "from turn_backend.engine import Runtime, fastest_memory_format\n"
        "rt = Runtime('cpu')\n"
        "# rank 0 is slow in channels-last, rank 1 in NCHW: left alone they would disagree\n"
        "slow = torch.channels_last if rt.rank == 0 else torch.contiguous_format\n"
        "fmt = fastest_memory_format(LayoutSensitive(slow), rt, 8, batch_size=2, measure=True)\n"
        "print(json.dumps({'rank': rt.rank, 'nchw': fmt == torch.contiguous_format}), flush=True)\n"
        # a gloo group left to interpreter shutdown can abort there ("terminate called without an
        # active exception", once in CI, after both ranks had printed their answer)
        "if torch.distributed.is_initialized():\n"
        "    torch.distributed.destroy_process_group()\n")
    # --standalone, as the worker launches: a free port, not a fixed one another run may hold
    result = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                             str(script)],
                            capture_output=True, text=True, timeout=120, cwd=Path(__file__).parents[1])
    assert result.returncode == 0, result.stdout[-1000:] + result.stderr[:3000] + "\n...\n" + result.stderr[-1000:]
    rows = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    assert sorted(r["rank"] for r in rows) == [0, 1] and all(r["nchw"] for r in rows)


def _jpeg(path: Path, size: tuple[int, int]) -> None:
    """A smooth colour image saved as a JPEG at `path`."""
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w]
    rgb = np.stack([xx * 255 // (w - 1), yy * 255 // (h - 1), (xx + yy) * 255 // (w + h)], -1)
    Image.fromarray(rgb.astype(np.uint8)).save(path, "JPEG", quality=95)


def test_a_large_jpeg_is_decoded_at_reduced_scale_but_never_below_the_input_size(tmp_path):
    from turn_backend.pipeline import decode_file

    _jpeg(tmp_path / "big.jpg", (1600, 1200))
    x = decode_file(str(tmp_path / "big.jpg"), 224)
    # libjpeg scales by 1/2, 1/4 or 1/8: 1/4 keeps the shorter side >= 224, 1/8 would not
    assert x.dtype == torch.uint8 and x.shape == (3, 300, 400)
    full = np.array(Image.open(tmp_path / "big.jpg").convert("RGB").resize((400, 300)))
    full = torch.from_numpy(full).permute(2, 0, 1)
    assert (x.float() - full.float()).abs().mean() < 3


@pytest.mark.parametrize("name, mode, fmt", [("grey.jpg", "L", "JPEG"), ("cmyk.jpg", "CMYK", "JPEG"),
                                             ("alpha.png", "RGBA", "PNG")])
def test_decode_file_gives_what_load_image_gives(tmp_path, name, mode, fmt):
    from turn_backend.pipeline import decode_file

    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (40, 50, 4), dtype=np.uint8), "RGBA").convert(mode).save(tmp_path / name, fmt)
    images = ImageSet(ids=["a"], labels=[0], class_names=["a"], paths=[str(tmp_path / name)])
    want = torch.from_numpy(np.array(images.load_image(0))).permute(2, 0, 1)
    assert torch.equal(decode_file(str(tmp_path / name), 224), want)


def test_default_workers_decode_files_in_parallel_only_beside_a_gpu(tmp_path, monkeypatch):
    from turn_backend.pipeline import default_workers

    monkeypatch.setattr("os.cpu_count", lambda: 16)
    files = ImageSet(ids=["a"], labels=[0], class_names=["a"], paths=[str(tmp_path / "a.jpg")])
    arrays = _array_set(np.zeros((2, 4, 4), dtype=np.uint8))
    assert default_workers(files, "cpu") == 0  # the forward needs the cores (docs/benchmarks.md)
    assert default_workers(files, "cuda") == 8
    assert default_workers(arrays, "cuda") == 0
    monkeypatch.setattr("os.cpu_count", lambda: 4)
    assert default_workers(files, torch.device("cuda", 0)) == 3


def test_the_feature_cache_follows_file_contents_not_their_folder(tmp_path, monkeypatch):
    """A folder renamed or copied elsewhere keeps its features; new bytes in one file do not."""
    import shutil

    from turn_backend.data import digests
    from turn_backend.data.loaders import load_dataset
    from turn_backend.features import feature_cache_path

    monkeypatch.setenv("TURN_CACHE_DIR", str(tmp_path / "cache"))
    rng = np.random.default_rng(0)
    for k in range(6):
        (tmp_path / "a" / f"c{k % 2}").mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(tmp_path / "a" / f"c{k % 2}" / f"{k}.png")
    pre = Preprocess(48, MEAN, STD)

    def cache_file(folder: str) -> Path:
        images = load_dataset({"kind": "folder", "path": str(tmp_path / folder)}).train
        return feature_cache_path(images, "efficientnet_lite0", None, True, pre, "train")

    first = cache_file("a")
    shutil.copytree(tmp_path / "a", tmp_path / "copy")
    (tmp_path / "a").rename(tmp_path / "renamed")
    assert cache_file("copy") == cache_file("renamed") == first
    # a second look at the same files reads none of them again: the index answers by path, size, mtime
    monkeypatch.setattr(digests, "file_digest", lambda path: pytest.fail(f"{path} was read again"))
    assert cache_file("renamed") == first
    monkeypatch.undo()
    monkeypatch.setenv("TURN_CACHE_DIR", str(tmp_path / "cache"))
    Image.fromarray(np.zeros((8, 8, 3), dtype=np.uint8)).save(tmp_path / "copy" / "c1" / "3.png")
    assert cache_file("copy") != first


def test_file_batches_are_scaled_and_normalised_in_one_pass_and_the_input_is_left_alone():
    x = torch.randint(0, 256, (4, 3, 8, 8), dtype=torch.uint8)
    kept = x.clone()
    pre = Preprocess(8, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    got = BatchPreprocess(pre, train=True, geometry=False)(x)
    want = (x.float() / 255 - torch.tensor(pre.mean).view(1, 3, 1, 1)) / torch.tensor(pre.std).view(1, 3, 1, 1)
    assert got.dtype == torch.float32 and torch.allclose(got, want, atol=1e-5)
    assert torch.equal(x, kept)


class _PieceRecorder(torch.nn.Module):
    """A stand-in extractor: each image's per-channel mean, and the size of every forward."""

    feature_dim = 3

    def __init__(self) -> None:
        super().__init__()
        self.pieces: list[int] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.pieces.append(len(x))
        return x.mean(dim=(2, 3))


@pytest.mark.parametrize("image_size, piece", [(224, 16), (112, 64), (48, 100)])
def test_cpu_inference_runs_the_forward_in_pieces_that_fit_the_caches(tmp_path, image_size, piece):
    from turn_backend.engine import Runtime, extract_features

    rng = np.random.default_rng(0)
    images = ImageSet(ids=[f"i{k}" for k in range(100)], labels=np.arange(100) % 2, class_names=["a", "b"],
                      arrays=rng.integers(0, 256, (100, 8, 8), dtype=np.uint8))
    pre = Preprocess(image_size, (0.5,) * 3, (0.5,) * 3)
    model = _PieceRecorder()
    feats = np.asarray(extract_features(model, images, pre, tmp_path / "f.npy", Runtime("cpu"), batch_size=128))
    # the loader's one batch of 100 went through the forward in pieces of at most `piece` images
    assert max(model.pieces) == piece and sum(model.pieces) == 100
    one_pass = _PieceRecorder()(batch_preprocess(images, pre, False)(torch.from_numpy(images.arrays[:, None])))
    np.testing.assert_allclose(feats, one_pass.numpy(), rtol=1e-5, atol=1e-5)
