"""Datasets: loaders for folders, manifests, standard sets and arrays, all to `DatasetBundle`."""

from turn_backend.data.common import IMAGE_EXTENSIONS, check_image_file
from turn_backend.data.core import DatasetBundle, DatasetError, ImageSet, SkippedItem, from_arrays
from turn_backend.data.loaders import KINDS, apply_label_noise, load_dataset

__all__ = [
    "IMAGE_EXTENSIONS",
    "KINDS",
    "DatasetBundle",
    "DatasetError",
    "ImageSet",
    "SkippedItem",
    "apply_label_noise",
    "check_image_file",
    "from_arrays",
    "load_dataset",
]
