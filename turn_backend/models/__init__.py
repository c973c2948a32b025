"""Models by name: the embedded EfficientNet-Lite0, timm models, Hugging Face image models."""

from turn_backend.models.core import Classifier, LoadedModel, ModelError
from turn_backend.models.registry import DEFAULT_MODEL, load_model

__all__ = ["Classifier", "DEFAULT_MODEL", "LoadedModel", "ModelError", "load_model"]
