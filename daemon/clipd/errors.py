"""The daemon's exception tree. Library code raises these; only the CLIs format them."""

from __future__ import annotations

from clipd_api import kinds


class ClipdError(Exception):
    """Base of every error clipd raises on purpose; str() is one line a person can act on."""


class ConfigError(ClipdError):
    """The configuration file is missing, malformed, or names something that does not exist."""


class StoreError(ClipdError):
    """The database cannot be opened, is from a newer clipd, or is damaged."""


class StoreUnwritable(StoreError):
    """A write failed for want of storage (disk full, read-only, I/O error); none of it was kept."""


class StoreUnavailable(StoreUnwritable):
    """The database server cannot be reached now (down, restarting, connection cut); the store
    connects again on its next call. Nothing of the failed call was kept."""


class TokenError(ClipdError):
    """The TCP token file cannot be created or read, or other users could read it."""


class ModelError(ClipdError):
    """The model or its weights cannot be loaded."""


class UnknownModel(ModelError, ConfigError):
    """model.name or model.pretrained names no model or tag OpenCLIP knows: a config error
    (exit 2, so a service manager does not restart clipd to meet it again)."""


class WeightsUnavailable(ModelError):
    """The weights cannot be fetched or loaded into the model: no runtime can run it."""


class WeightsOffline(WeightsUnavailable):
    """The weights are not on this machine, and this machine cannot reach where they are."""


class ImageError(ClipdError):
    """A file cannot be turned into an RGB image; error_class is its failure kind (clipd_api.kinds).

    Raise a subclass: each names its kind more precisely than this base's default.
    """

    error_class = kinds.CORRUPT_IMAGE


class NotAnImage(ImageError):
    """The bytes are not an image format clipd reads (empty, text, random bytes, ...)."""

    error_class = kinds.NOT_AN_IMAGE


class MissingDecoder(ImageError):
    """The format is recognised, but the package that decodes it is not installed.

    Such failures are retried once at every start, since installing the package needs one.
    """

    error_class = kinds.MISSING_DECODER


class CorruptImage(ImageError):
    """The format is recognised but decoding failed (truncated, damaged)."""

    error_class = kinds.CORRUPT_IMAGE


class ImageTooLarge(ImageError):
    """The image has more pixels than the configured cap (decompression-bomb guard)."""

    error_class = kinds.IMAGE_TOO_LARGE


class Unreadable(ImageError):
    """The file cannot be opened or read (permissions, vanished, not a regular file)."""

    error_class = kinds.UNREADABLE


class AlreadyRunning(ClipdError):
    """Another clipd process owns the database or the socket."""


class UnusablePath(ImageError):
    """The file's path cannot be stored or opened (not valid UTF-8, longer than the OS allows)."""

    error_class = kinds.UNUSABLE_PATH
