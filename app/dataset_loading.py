"""What the Dataset page does that is not layout: loading a dataset spec (with a progress bar,
the demo cached), keeping an uploaded manifest beside the runs, and the sample thumbnails."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import streamlit as st
from PIL import Image, ImageOps

from app import ui
from app.state import runs_root, start_dir
from turn_backend.data import DatasetError, load_dataset


def spec_key(obj) -> str:
    return json.dumps(obj, sort_keys=True, default=str)


@st.cache_resource(show_spinner=False, max_entries=4)
def load_demo_cached(n_train: int, n_test: int):
    return load_dataset({"kind": "demo", "n_train": n_train, "n_test": n_test})


def load_with_progress(spec: dict):
    """load_dataset with a progress bar; DatasetError is left to the caller."""
    if spec["kind"] == "demo":
        return load_demo_cached(int(spec["n_train"]), int(spec["n_test"]))
    bar = st.progress(0.0, text="Reading the dataset…")

    def progress(stage: str, done: int, total: int) -> None:
        bar.progress(min(1.0, done / total) if total else 0.0, text=f"{stage}: {done:,} / {total:,}")

    try:
        return load_dataset(spec, progress=progress)
    finally:
        bar.empty()


def save_upload(upload) -> Path:
    """An uploaded manifest, kept beside the runs (runs need it again when they start)."""
    data = upload.getvalue()
    digest = hashlib.sha256(data).hexdigest()[:12]
    folder = runs_root() / "_uploads"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{digest}-{Path(upload.name).name}"
    if not path.exists():
        path.write_bytes(data)
    return path


def _where_hint(spec: dict) -> str:
    """What was tried, for an error: the absolute paths the typed ones became."""
    tried = ", ".join(f"{k} `{spec[k]}`" for k in ("path", "root") if spec.get(k))
    return f"Tried {tried} (relative paths are read from `{start_dir()}`)." if tried else ""


def try_load(spec: dict) -> bool:
    """Load `spec`; on success it becomes the chosen dataset. Errors are shown, never raised."""
    try:
        bundle = load_with_progress(spec)
    except DatasetError as exc:
        ui.show_error(exc, _where_hint(spec))
        return False
    except (OSError, ValueError, ImportError) as exc:
        ui.show_error(f"Could not read the dataset: {exc}", f"Check the path and the file format. {_where_hint(spec)}")
        return False
    st.session_state["ds_loaded"] = (spec_key(spec), bundle)
    st.session_state["dataset_spec"] = spec
    return True


def thumbnail(img: Image.Image, wrong: bool, size: int = 96) -> Image.Image:
    """A square thumbnail (small images scaled up without blur); a red frame when mislabelled."""
    img = img.convert("RGB")
    if max(img.size) < size:
        img = img.resize((size, size), Image.Resampling.NEAREST)
    else:
        img.thumbnail((size, size))
    if wrong:
        img = ImageOps.expand(img, border=max(3, size // 24), fill=(228, 87, 86))
    return img
