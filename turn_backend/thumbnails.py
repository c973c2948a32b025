"""Small cached copies of large image files, for the app's image display.

Review cards, the class pages and the map hovers show images at 256 px or less. Decoding a
4,000 x 3,000 photo for that takes a tenth of a second or more each time; its thumbnail, a
JPEG of at most `THUMB_PX` on the longer side made once (with PIL's reduced-scale JPEG
decoding), loads as fast as a small image. Thumbnails live under the cache root, keyed by
the file's absolute path, size and modification time, so a changed file gets a new one;
they are written atomically, so two app sessions never see half a file.
"""

from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path

from PIL import Image

from turn_backend.data.core import ImageSet, to_rgb
from turn_backend.io import atomic_write_bytes, cache_root

THUMB_PX = 256


def thumbnail_path(path: str | os.PathLike, size: int = THUMB_PX) -> Path:
    """Where the thumbnail of the image file `path` is (or will be) cached."""
    absolute = os.path.abspath(path)
    st = os.stat(absolute)
    key = hashlib.sha256(f"{absolute}\x1f{st.st_size}\x1f{st.st_mtime_ns}\x1f{size}".encode()).hexdigest()[:24]
    return cache_root() / "thumbnails" / key[:2] / f"{key}.jpg"


def thumbnail(path: str | os.PathLike, size: int = THUMB_PX) -> Image.Image:
    """The image file `path` as RGB, at most `size` px on its longer side when it is larger.

    An image of at most `size` px is decoded as it is (tiny images keep every pixel); a
    larger one is read from its cached thumbnail, made on the first call.
    """
    cached = thumbnail_path(path, size)
    try:
        with Image.open(cached) as img:
            return to_rgb(img)
    except FileNotFoundError:
        pass
    with Image.open(path) as img:
        if max(img.size) <= size:
            return to_rgb(img)
        if img.format == "JPEG":
            img.draft("RGB", (size, size))  # decode at 1/2 .. 1/8 scale, still >= size
        small = to_rgb(img)
    small.thumbnail((size, size), Image.Resampling.LANCZOS)
    buf = io.BytesIO()
    small.save(buf, format="JPEG", quality=90)
    atomic_write_bytes(cached, buf.getvalue())
    return small


def preview_image(images: ImageSet, i: int, size: int = THUMB_PX) -> Image.Image:
    """Sample `i` of `images` as an RGB image for display: array images as they are, files
    through `thumbnail` (at most `size` px on the longer side)."""
    if images.paths is None:
        return images.load_image(i)
    return thumbnail(images.paths[i], size)
