"""Errors a user can fix, each with a message that says how. Light to import (the CLI
catches them without loading torch)."""


class DatasetError(ValueError):
    """Input that cannot become a dataset; the message says what is wrong and how to fix it."""


class ModelError(ValueError):
    """A model that cannot be built; the message says what to fix."""
