"""Shared loader machinery: image-file checks, label mapping, building splits, final checks.

Loaders that read files first collect `Candidate`s (a path, a given label, maybe a true
label), then `build_split` checks the files (in parallel threads) and turns the good ones
into an `ImageSet`, recording every left-out file as a `SkippedItem` with its reason.
`finish_bundle` applies the checks every dataset must pass (not empty, two classes with
samples) and records classes left without samples.
"""

from __future__ import annotations

import os
import re
import stat
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from turn_backend.data.core import DatasetBundle, DatasetError, ImageSet, SkippedItem

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")
VERIFY_LEVELS = ("exists", "verify", "decode")

# progress(stage, done, total)
Progress = Callable[[str, int, int], None]


@dataclass
class LoadOptions:
    """Settings every loader shares (spec keys "verify", "max_train", "max_test", "subset_seed")."""

    verify: str = "verify"
    max_train: int | None = None
    max_test: int | None = None
    seed: int = 0
    progress: Progress | None = None

    def limit(self, split: str) -> int | None:
        return self.max_train if split == "train" else self.max_test


@dataclass(slots=True)
class Candidate:
    """A sample a loader found, before its file is checked."""

    id: str
    path: Path
    label: int
    true_label: int | None = None
    source: str = ""  # how the input named it (shown in skipped-item reports)


def is_image_name(name: str) -> bool:
    return name.lower().endswith(IMAGE_EXTENSIONS)


# ---------------------------------------------------------------------------- image checks


def check_image_bytes_reason(opener: Callable[[], Image.Image], level: str) -> str | None:
    """Why the image an `opener` yields is unusable, or None when it is fine."""
    try:
        with opener() as img:
            limit = Image.MAX_IMAGE_PIXELS
            if limit and img.size[0] * img.size[1] > limit:
                return f"image too large to decode safely ({img.size[0]}x{img.size[1]} pixels)"
            if level == "decode":
                img.load()
            else:
                img.verify()
    except UnidentifiedImageError:
        return "not an image file PIL can read"
    except Image.DecompressionBombError as exc:
        return f"image too large to decode safely ({exc})"
    except PermissionError:
        return "cannot read file (permission denied)"
    except MemoryError:
        return "image too large to decode"
    except Exception as exc:  # noqa: BLE001 - PIL's decoders raise many kinds on malformed data
        return f"corrupt or truncated image ({type(exc).__name__}: {exc})"
    return None


def check_image_file(path: str | os.PathLike, level: str = "verify") -> str | None:
    """Why the image file at `path` is unusable, or None when it looks fine.

    `level`: "exists" (a non-empty regular file), "verify" (also PIL's `Image.open` +
    `verify()`: header and, for PNG, chunk checksums; cheap, but a JPEG cut short is only
    caught by "decode"), "decode" (fully decode the pixels; slowest, catches everything).
    """
    if level not in VERIFY_LEVELS:
        raise DatasetError(f"verify must be one of {', '.join(VERIFY_LEVELS)}, got {level!r}")
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return "file not found"
    except OSError as exc:
        return f"cannot read file ({exc.strerror or exc})"
    if not stat.S_ISREG(st.st_mode):
        return "not a regular file"
    if st.st_size == 0:
        return "empty file (0 bytes)"
    if level == "exists":
        return None
    return check_image_bytes_reason(lambda: Image.open(path), level)


def check_files(
    paths: Sequence[Path], level: str, progress: Progress | None = None, stage: str = "checking images"
) -> list[str | None]:
    """`check_image_file` over many paths, in threads (file I/O dominates)."""
    n = len(paths)
    if n == 0:
        return []
    if n <= 64:
        out = [check_image_file(p, level) for p in paths]
        if progress:
            progress(stage, n, n)
        return out
    workers = min(32, 4 * (os.cpu_count() or 2))
    chunk = 256
    parts = [paths[k:k + chunk] for k in range(0, n, chunk)]
    out: list[str | None] = []
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for part in pool.map(lambda ps: [check_image_file(p, level) for p in ps], parts):
            out.extend(part)
            if progress:
                progress(stage, len(out), n)
    return out


# ---------------------------------------------------------------------------- labels

_INT_RE = re.compile(r"^[+-]?\d+$")


def label_text(value: object) -> str:
    """A label cell as text: strings stripped, integral floats as integers, None as ''."""
    if value is None:
        return ""
    if isinstance(value, (bool, np.bool_)):
        return str(int(value))
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        if np.isnan(value):
            return ""
        if float(value).is_integer():
            return str(int(value))
        return str(value)
    if isinstance(value, bytes):
        value = value.decode("utf-8", errors="replace")
    return str(value).strip()


def is_int_text(s: str) -> bool:
    return bool(_INT_RE.match(s))


def classes_from_labels(values: Iterable[str]) -> list[str]:
    """Sorted unique label texts: numerically when every label is an integer."""
    uniq = {v for v in values if v != ""}
    if uniq and all(is_int_text(v) for v in uniq):
        return sorted(uniq, key=lambda v: (int(v), v))
    return sorted(uniq)


class LabelMapper:
    """Maps label texts to class indices: by exact name, else (integers) by index."""

    def __init__(self, class_names: Sequence[str]):
        self.class_names = [str(c) for c in class_names]
        if len(set(self.class_names)) != len(self.class_names):
            dupes = sorted(c for c, k in Counter(self.class_names).items() if k > 1)
            raise DatasetError(f"the class list names some classes twice: {dupes}")
        self.index = {c: i for i, c in enumerate(self.class_names)}
        self.stripped = {c.strip(): i for i, c in enumerate(self.class_names)}

    def __call__(self, text: str) -> int | None:
        if text in self.index:
            return self.index[text]
        if text in self.stripped:
            return self.stripped[text]
        if is_int_text(text):
            k = int(text)
            if 0 <= k < len(self.class_names):
                return k
        return None


def unique_names(names: Sequence[str], keys: Sequence[str]) -> list[str]:
    """`names` with duplicates disambiguated by their key ("crane (n03126707)")."""
    counts = Counter(names)
    return [f"{n} ({k})" if counts[n] > 1 else n for n, k in zip(names, keys)]


# ---------------------------------------------------------------------------- splits


def limit_indices(n: int, limit: int | None, seed: int) -> np.ndarray:
    """All of range(n), or a seeded random `limit` of them in their original order."""
    if limit is None or limit >= n:
        return np.arange(n)
    if limit <= 0:
        raise DatasetError(f"max_train / max_test must be positive, got {limit}")
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(n, size=limit, replace=False))


def build_split(
    candidates: Sequence[Candidate],
    class_names: list[str],
    skipped: list[SkippedItem],
    opts: LoadOptions,
    *,
    split: str = "train",
    info: dict | None = None,
) -> ImageSet | None:
    """The `ImageSet` of the candidates whose files pass `check_image_file`; None if none do.

    True labels are kept when every kept sample has one; when only some do they go to
    `info["partial_true_labels"][split]` (-1 where unknown) and the split's true labels are None.
    """
    ids = [c.id for c in candidates]
    if len(set(ids)) != len(ids):
        dupes = sorted(k for k, v in Counter(ids).items() if v > 1)
        raise DatasetError(f"sample ids must be unique; duplicated in the {split} split: {_show(dupes)}")
    limit = opts.limit(split)
    if limit is not None:
        candidates = [candidates[i] for i in limit_indices(len(candidates), limit, opts.seed)]
    reasons = check_files([c.path for c in candidates], opts.verify, opts.progress, f"checking {split} images")
    kept = []
    for c, reason in zip(candidates, reasons):
        if reason is None:
            kept.append(c)
        else:
            skipped.append(SkippedItem(source=c.source or str(c.path), reason=f"{reason} [{split}]"))
    if not kept:
        return None
    trues = [c.true_label for c in kept]
    known = sum(t is not None for t in trues)
    true_labels = None
    if known == len(kept):
        true_labels = np.asarray(trues, dtype=np.int64)
    elif known and info is not None:
        info.setdefault("partial_true_labels", {})[split] = np.asarray(
            [-1 if t is None else t for t in trues], dtype=np.int64
        )
    return ImageSet(
        ids=[c.id for c in kept],
        labels=np.asarray([c.label for c in kept], dtype=np.int64),
        class_names=list(class_names),
        true_labels=true_labels,
        paths=[str(c.path) for c in kept],
    )


def _show(items: Sequence[str], k: int = 5) -> str:
    shown = ", ".join(repr(x) for x in items[:k])
    return shown + (f" and {len(items) - k} more" if len(items) > k else "")


def _reason_kind(reason: str) -> str:
    """A reason without its details: 'label 'x' is not ... (m.csv line 3)' -> 'label '…' is not ...'."""
    reason = re.sub(r"\s*\[[^\]]*\]$", "", reason)
    reason = re.sub(r" \(.*", "", reason)
    return re.sub(r"'[^']*'|\"[^\"]*\"", "'…'", reason)


def summarize_skipped(skipped: Sequence[SkippedItem], k: int = 4) -> str:
    """'3 skipped: file not found (2), empty file (0 bytes) (1)'."""
    if not skipped:
        return "nothing was skipped"
    counts = Counter(_reason_kind(s.reason) for s in skipped)
    parts = [f"{r} ({n})" for r, n in counts.most_common(k)]
    more = len(counts) - k
    return f"{len(skipped)} skipped: " + "; ".join(parts) + (f"; {more} other reasons" if more > 0 else "")


def warn(info: dict, message: str) -> None:
    info.setdefault("warnings", []).append(message)


def limit_arrays(ds: ImageSet | None, limit: int | None, seed: int) -> ImageSet | None:
    """An array split cut to a seeded random `limit` samples (order kept)."""
    if ds is None or limit is None or limit >= len(ds):
        return ds
    return ds.subset(limit_indices(len(ds), limit, seed))


def finish_bundle(
    name: str,
    train: ImageSet | None,
    test: ImageSet | None,
    skipped: list[SkippedItem],
    info: dict,
    *,
    what: str = "the dataset",
) -> DatasetBundle:
    """The bundle, after the checks every dataset must pass."""
    if train is None or len(train) == 0:
        raise DatasetError(
            f"{what} has no usable training images ({summarize_skipped(skipped)}). "
            f"Image files need one of the extensions {', '.join(IMAGE_EXTENSIONS)}."
        )
    counts = train.class_counts()
    present = int(np.count_nonzero(counts))
    if present < 2:
        only = [train.class_names[i] for i in np.flatnonzero(counts)]
        raise DatasetError(
            f"TURN needs at least two classes with training samples; {what} has "
            f"{present} ({_show(only)}) with {len(train)} samples. Its per-class loss "
            f"mixture separates clean from noisy labels only when there are classes to confuse."
        )
    empty = [train.class_names[i] for i in np.flatnonzero(counts == 0)]
    if empty:
        info["empty_classes"] = empty
        warn(info, f"{len(empty)} of {train.num_classes} classes have no training samples: {_show(empty)}")
    if skipped:
        info["skipped_count"] = len(skipped)
        warn(info, summarize_skipped(skipped))
    return DatasetBundle(name=name, train=train, test=test, skipped=list(skipped), info=info)


def find_existing(root: Path, names: Sequence[str]) -> Path | None:
    for n in names:
        p = root / n
        if p.exists():
            return p
    return None
