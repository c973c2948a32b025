"""What the audit pages (Review, Classes, Noise matrix) read from a run folder, cached.

Each loader is cached per run folder and a stamp of the files it reads, so a page's rerun
(a click) reads nothing from disk, and a resumed or retrained run is read again. Thumbnails
are small PNGs cached across reruns and sessions.
"""

from __future__ import annotations

import base64
import html
import io

import numpy as np
import streamlit as st
from PIL import Image

from app import ui
from turn_backend import run_views
from turn_backend.runfolder import RunFolder
from turn_backend.thumbnails import preview_image


def stamp(folder: RunFolder) -> float:
    """Changes when the run's results are rewritten (a resumed run, a new detection or audit)."""
    return folder.stamp()


@st.cache_resource(show_spinner=False, max_entries=4)
def _review_inputs(run_dir: str, stamp: float) -> dict:
    return run_views.review_inputs(RunFolder(run_dir))


def review_inputs(folder: RunFolder) -> dict:
    """`analysis.review_inputs` of the run (per training sample: labels, clean probability,
    suggestion, signals, audit), read once per run."""
    return _review_inputs(str(folder.path.resolve()), stamp(folder))


@st.cache_resource(show_spinner=False, max_entries=4)
def _detection(run_dir: str, stamp: float) -> dict | None:
    return RunFolder(run_dir).detection()


def detection(folder: RunFolder) -> dict | None:
    """`RunFolder.detection()`, read once per run."""
    return _detection(str(folder.path.resolve()), stamp(folder))


@st.cache_resource(show_spinner=False, max_entries=4)
def _audit(run_dir: str, stamp: float) -> dict | None:
    return RunFolder(run_dir).audit()


def audit(folder: RunFolder) -> dict | None:
    """`RunFolder.audit()`, read once per run."""
    return _audit(str(folder.path.resolve()), stamp(folder))


@st.cache_resource(show_spinner=False, max_entries=4)
def _samples(run_dir: str, stamp: float):
    return RunFolder(run_dir).samples()


def samples(folder: RunFolder):
    """samples.parquet of the run, read once per run."""
    return _samples(str(folder.path.resolve()), stamp(folder))


@st.cache_data(show_spinner=False, max_entries=4096)
def _thumbnail(run_dir: str, stamp: float, split: str, i: int, size: int) -> bytes | None:
    try:
        bundle = ui.run_bundle(RunFolder(run_dir))
        img = preview_image(bundle.train if split == "train" else bundle.test, int(i))
    except Exception:  # noqa: BLE001 - a file that vanished since training: the card still works
        return None
    scale = size / max(img.size)
    resample = Image.NEAREST if max(img.size) <= 64 else Image.LANCZOS  # keep tiny images crisp
    img = img.resize((max(1, round(img.size[0] * scale)), max(1, round(img.size[1] * scale))), resample)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def thumbnail(folder: RunFolder, i: int, size: int, split: str = "train") -> bytes | None:
    """Sample i of a split as a PNG of `size` px on its longer side (a few kB); None where the
    image cannot be read any more."""
    return _thumbnail(str(folder.path.resolve()), stamp(folder), split, int(i), int(size))


TINY_PX = 64  # images this small (Fashion-MNIST, CIFAR) are sent as they are and enlarged by the browser


@st.cache_data(show_spinner=False, max_entries=8192)
def _thumbnail_uri(run_dir: str, stamp: float, split: str, i: int, size: int) -> tuple[str, int, int, bool] | None:
    try:
        bundle = ui.run_bundle(RunFolder(run_dir))
        img = preview_image(bundle.train if split == "train" else bundle.test, int(i))
    except Exception:  # noqa: BLE001 - a file that vanished since training: the card still works
        return None
    w, h = img.size
    scale = size / max(w, h)
    shown = (max(1, round(w * scale)), max(1, round(h * scale)))
    buf = io.BytesIO()
    pixels = np.asarray(img)
    grey = pixels.ndim == 3 and (pixels == pixels[..., :1]).all()
    if max(w, h) <= TINY_PX:  # a few hundred bytes; enlarged pixel by pixel in the browser
        (img.convert("L") if grey else img).save(buf, format="PNG")
        mime, tiny = "image/png", True
    else:  # a photo: JPEG at the size it is shown
        img = img.resize(shown, Image.LANCZOS)
        (img.convert("L") if grey else img.convert("RGB")).save(buf, format="JPEG", quality=85)
        mime, tiny = "image/jpeg", False
    return f"data:{mime};base64,{base64.b64encode(buf.getvalue()).decode('ascii')}", shown[0], shown[1], tiny


def thumbnail_html(folder: RunFolder, i: int, size: int, split: str = "train", alt: str = "") -> str | None:
    """Sample i of a split as an `<img>` of `size` px on its longer side, its image inlined
    (for Markdown with `unsafe_allow_html`: the card's picture and text in one element, and
    no request per image); None where the image cannot be read any more."""
    found = _thumbnail_uri(str(folder.path.resolve()), stamp(folder), split, int(i), int(size))
    if found is None:
        return None
    src, w, h, tiny = found
    # as st.image draws it: left, rounded corners; the size set here (Markdown's own style
    # would show a tiny image at its natural size)
    style = (f"display:block;margin:0 0 1rem 0;width:{w}px;max-width:100%;height:auto;aspect-ratio:{w}/{h};"
             "border-radius:0.5rem;object-fit:fill" + (";image-rendering:pixelated" if tiny else ""))
    return f'<img src="{src}" width="{w}" height="{h}" alt="{html.escape(alt, quote=True)}" style="{style}">'
