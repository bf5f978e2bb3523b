"""clipq: the client of the clipd image search daemon, as a library and as a command.

    from clipq import Client

    with Client() as clipd:
        for hit in clipd.search("red brick wall", limit=5):
            print(f"{hit.score:.3f}  {hit.path}")

It needs only grpc, protobuf and clipd_api, so importing it is fast.
"""

from clipq._client import Client, Hit, QueryTerm, SearchResult, Status
from clipq._errors import (
    BadRequest,
    ClipqError,
    DaemonStarting,
    DaemonUnavailable,
    NotFound,
    RpcError,
)

__all__ = [
    "BadRequest",
    "Client",
    "ClipqError",
    "DaemonStarting",
    "DaemonUnavailable",
    "Hit",
    "NotFound",
    "QueryTerm",
    "RpcError",
    "SearchResult",
    "Status",
]
