"""Thumbnails of large image files: small, made once, remade when the file changes."""

from __future__ import annotations

import numpy as np
from PIL import Image

from turn_backend.data.core import ImageSet
from turn_backend.thumbnails import preview_image, thumbnail, thumbnail_path


def _photo(path, colour, size=(4000, 3000)) -> None:
    Image.new("RGB", size, colour).save(path, "JPEG", quality=90)


def test_a_large_photo_gets_a_small_cached_thumbnail_and_a_changed_file_a_new_one(tmp_path, monkeypatch):
    monkeypatch.setenv("TURN_CACHE_DIR", str(tmp_path / "cache"))
    photo = tmp_path / "photo.jpg"
    _photo(photo, (200, 30, 30))
    first = thumbnail(photo)
    assert first.size == (256, 192) and first.mode == "RGB"
    assert np.abs(np.asarray(first, dtype=int) - (200, 30, 30)).max() < 8
    cached = thumbnail_path(photo)
    assert cached.is_file() and cached.parent.parent == tmp_path / "cache" / "thumbnails"
    # a second call reads the cached file, not the photo: mark the cached copy and see it come back
    Image.new("RGB", (256, 192), (0, 0, 255)).save(cached, "JPEG")
    assert np.asarray(thumbnail(photo))[0, 0, 2] > 240
    _photo(photo, (30, 200, 30), size=(3000, 4000))  # new bytes: a new key, a new thumbnail
    assert thumbnail_path(photo) != cached
    again = thumbnail(photo)
    assert again.size == (192, 256) and np.asarray(again)[0, 0, 1] > 180


def test_small_images_and_arrays_are_shown_as_they_are(tmp_path, monkeypatch):
    monkeypatch.setenv("TURN_CACHE_DIR", str(tmp_path / "cache"))
    Image.new("L", (28, 28), 77).save(tmp_path / "tiny.png")
    files = ImageSet(ids=["t"], labels=[0], class_names=["a"], paths=[str(tmp_path / "tiny.png")])
    tiny = preview_image(files, 0)
    assert tiny.size == (28, 28) and tiny.mode == "RGB"
    assert not (tmp_path / "cache").exists()  # nothing to cache
    arrays = ImageSet(ids=["a"], labels=[0], class_names=["a"], arrays=np.full((1, 5, 5), 9, dtype=np.uint8))
    assert preview_image(arrays, 0).size == (5, 5)
