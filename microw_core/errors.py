"""User-facing errors.

Every error microw raises on purpose is a ``MicrowError``: its message says what went
wrong and what to do about it. The user guide's Troubleshooting page lists each class.
"""


class MicrowError(Exception):
    """User-facing error whose message says what went wrong and what to do."""


class ModelLoadError(MicrowError):
    """A model or tokenizer could not be loaded."""


class LayerNotFoundError(MicrowError):
    """A layer name or alias does not exist in the model."""


class DatasetError(MicrowError):
    """A dataset is missing, empty, unreadable or has the wrong columns."""


class StoreError(MicrowError):
    """A store item is missing or a name is not allowed."""


class StoreCorruptError(StoreError):
    """A store file is truncated, garbled or fails its checksum."""


class ShapeMismatchError(MicrowError):
    """Tensors whose sizes must agree do not (e.g. an SAE and a layer)."""


class InvalidInputError(MicrowError):
    """An argument is out of range or data contains NaN / inf."""


class JobError(MicrowError):
    """A background job failed or cannot be resumed."""


class SAEConfigError(MicrowError):
    """An SAE configuration is inconsistent."""
