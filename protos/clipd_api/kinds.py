"""Names that the daemon sends and clients read: error kinds and failure kinds, listed once.

Both lists are part of the wire API (clipd.proto's comments point here); clipd and clipq import
them from this module so that neither can name a kind the other does not know.
"""

from __future__ import annotations

import enum


class ErrorKind(str, enum.Enum):
    """Why the daemon refused a request, whatever the transport.

    Over gRPC the kind travels in the trailing metadata under ERROR_KIND_METADATA (beside the
    status code, which is coarser: NOT_READY and UNAVAILABLE are both UNAVAILABLE); over HTTP
    it is the `kind` of the JSON error body.
    """

    # The request is wrong; the message says what to change.
    BAD_REQUEST = "bad_request"
    # A path the request names is not an indexed image.
    NOT_FOUND = "not_found"
    # The input is over a size limit (an image with too many pixels, a body too big).
    TOO_LARGE = "too_large"
    # The daemon is still loading its model; the same request works in a few seconds.
    NOT_READY = "not_ready"
    # The daemon cannot answer this now (shutting down, too many streams open); try later.
    UNAVAILABLE = "unavailable"


# The gRPC trailing metadata key that carries an ErrorKind value on a failed call.
ERROR_KIND_METADATA = "clipd-error-kind"


# Failure kinds: the `error` of a file that could not be indexed (ListFailures, clipq failures).
# The file is not an image format clipd reads (empty, text, random bytes...).
NOT_AN_IMAGE = "NotAnImage"
# The format is recognised but decoding failed (truncated, damaged).
CORRUPT_IMAGE = "CorruptImage"
# The format is recognised, but the library that decodes it is not installed (HEIC, RAW...);
# retried at the next start, once it may be.
MISSING_DECODER = "MissingDecoder"
# More pixels than max_image_pixels, or over Pillow's own limit (decompression-bomb guard).
IMAGE_TOO_LARGE = "ImageTooLarge"
# The file cannot be opened or read (permissions, vanished, not a regular file).
UNREADABLE = "Unreadable"
# The path cannot be stored or opened (not valid UTF-8, longer than the OS allows).
UNUSABLE_PATH = "UnusablePath"
# The model failed on this image.
EMBED_ERROR = "EmbedError"
# A bug in clipd; its log has the traceback.
INTERNAL_ERROR = "InternalError"

FAILURE_KINDS = (
    NOT_AN_IMAGE,
    CORRUPT_IMAGE,
    MISSING_DECODER,
    IMAGE_TOO_LARGE,
    UNREADABLE,
    UNUSABLE_PATH,
    EMBED_ERROR,
    INTERNAL_ERROR,
)
