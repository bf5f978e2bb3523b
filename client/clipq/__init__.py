"""clipq: the client of the clipd image search daemon, as a library and as a command.

    from clipq import Client, Text

    with Client() as clipd:
        for hit in clipd.search("red brick wall", Text("graffiti", -0.5), limit=5):
            print(f"{hit.score:.3f}  {hit.path}")
        print(clipd.status().state, len(clipd.failures()), "failures")

It needs only grpc, protobuf and clipd_api, so importing it is fast.
"""

from clipq._client import (
    DUPLICATE_TIERS,
    Client,
    DuplicateGroup,
    DuplicatesPage,
    Failure,
    FailurePage,
    Hit,
    ImageBytes,
    ImageFile,
    QueryTerm,
    ReindexResult,
    SearchResult,
    Status,
    Text,
    Thumbnail,
    Timestamp,
)
from clipq._errors import (
    BadRequest,
    ClipqError,
    DaemonStarting,
    DaemonUnavailable,
    NotFound,
    PreviewUnsupported,
    RpcError,
    TimedOut,
    Unauthenticated,
)

__all__ = [
    "DUPLICATE_TIERS",
    "BadRequest",
    "Client",
    "ClipqError",
    "DaemonStarting",
    "DaemonUnavailable",
    "DuplicateGroup",
    "DuplicatesPage",
    "Failure",
    "FailurePage",
    "Hit",
    "ImageBytes",
    "ImageFile",
    "NotFound",
    "PreviewUnsupported",
    "QueryTerm",
    "ReindexResult",
    "RpcError",
    "SearchResult",
    "Status",
    "Text",
    "Thumbnail",
    "TimedOut",
    "Timestamp",
    "Unauthenticated",
]
