"""Datasets: loaders for folders, manifests, standard sets and arrays, all to `DatasetBundle`."""

from turn_backend.data.core import DatasetBundle, DatasetError, ImageSet, SkippedItem, from_arrays

__all__ = ["DatasetBundle", "DatasetError", "ImageSet", "SkippedItem", "from_arrays"]
