from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Term(_message.Message):
    __slots__ = ("text", "image", "path", "weight")
    TEXT_FIELD_NUMBER: _ClassVar[int]
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_FIELD_NUMBER: _ClassVar[int]
    text: str
    image: bytes
    path: str
    weight: float
    def __init__(self, text: _Optional[str] = ..., image: _Optional[bytes] = ..., path: _Optional[str] = ..., weight: _Optional[float] = ...) -> None: ...

class SearchRequest(_message.Message):
    __slots__ = ("terms", "limit", "offset", "min_score", "under", "extensions", "modified_after", "modified_before", "taken_after", "taken_before", "hosts", "exact")
    TERMS_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    MIN_SCORE_FIELD_NUMBER: _ClassVar[int]
    UNDER_FIELD_NUMBER: _ClassVar[int]
    EXTENSIONS_FIELD_NUMBER: _ClassVar[int]
    MODIFIED_AFTER_FIELD_NUMBER: _ClassVar[int]
    MODIFIED_BEFORE_FIELD_NUMBER: _ClassVar[int]
    TAKEN_AFTER_FIELD_NUMBER: _ClassVar[int]
    TAKEN_BEFORE_FIELD_NUMBER: _ClassVar[int]
    HOSTS_FIELD_NUMBER: _ClassVar[int]
    EXACT_FIELD_NUMBER: _ClassVar[int]
    terms: _containers.RepeatedCompositeFieldContainer[Term]
    limit: int
    offset: int
    min_score: float
    under: _containers.RepeatedScalarFieldContainer[str]
    extensions: _containers.RepeatedScalarFieldContainer[str]
    modified_after: float
    modified_before: float
    taken_after: float
    taken_before: float
    hosts: _containers.RepeatedScalarFieldContainer[str]
    exact: bool
    def __init__(self, terms: _Optional[_Iterable[_Union[Term, _Mapping]]] = ..., limit: _Optional[int] = ..., offset: _Optional[int] = ..., min_score: _Optional[float] = ..., under: _Optional[_Iterable[str]] = ..., extensions: _Optional[_Iterable[str]] = ..., modified_after: _Optional[float] = ..., modified_before: _Optional[float] = ..., taken_after: _Optional[float] = ..., taken_before: _Optional[float] = ..., hosts: _Optional[_Iterable[str]] = ..., exact: _Optional[bool] = ...) -> None: ...

class Hit(_message.Message):
    __slots__ = ("path", "score", "width", "height", "size_bytes", "mtime", "taken", "paired", "host")
    PATH_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    MTIME_FIELD_NUMBER: _ClassVar[int]
    TAKEN_FIELD_NUMBER: _ClassVar[int]
    PAIRED_FIELD_NUMBER: _ClassVar[int]
    HOST_FIELD_NUMBER: _ClassVar[int]
    path: str
    score: float
    width: int
    height: int
    size_bytes: int
    mtime: float
    taken: float
    paired: _containers.RepeatedScalarFieldContainer[str]
    host: str
    def __init__(self, path: _Optional[str] = ..., score: _Optional[float] = ..., width: _Optional[int] = ..., height: _Optional[int] = ..., size_bytes: _Optional[int] = ..., mtime: _Optional[float] = ..., taken: _Optional[float] = ..., paired: _Optional[_Iterable[str]] = ..., host: _Optional[str] = ...) -> None: ...

class SearchResponse(_message.Message):
    __slots__ = ("hits", "partial", "took_ms", "nothing_indexed", "host")
    HITS_FIELD_NUMBER: _ClassVar[int]
    PARTIAL_FIELD_NUMBER: _ClassVar[int]
    TOOK_MS_FIELD_NUMBER: _ClassVar[int]
    NOTHING_INDEXED_FIELD_NUMBER: _ClassVar[int]
    HOST_FIELD_NUMBER: _ClassVar[int]
    hits: _containers.RepeatedCompositeFieldContainer[Hit]
    partial: bool
    took_ms: float
    nothing_indexed: bool
    host: str
    def __init__(self, hits: _Optional[_Iterable[_Union[Hit, _Mapping]]] = ..., partial: _Optional[bool] = ..., took_ms: _Optional[float] = ..., nothing_indexed: _Optional[bool] = ..., host: _Optional[str] = ...) -> None: ...

class StatusRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class Status(_message.Message):
    __slots__ = ("state", "version", "indexed", "queued", "failed", "offline", "images_per_second", "eta_seconds", "model", "pretrained", "dim", "device", "roots", "database", "database_bytes", "started_at", "problem", "web_url")
    class State(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        STATE_UNSPECIFIED: _ClassVar[Status.State]
        STARTING: _ClassVar[Status.State]
        INDEXING: _ClassVar[Status.State]
        IDLE: _ClassVar[Status.State]
        STOPPING: _ClassVar[Status.State]
    STATE_UNSPECIFIED: Status.State
    STARTING: Status.State
    INDEXING: Status.State
    IDLE: Status.State
    STOPPING: Status.State
    STATE_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    INDEXED_FIELD_NUMBER: _ClassVar[int]
    QUEUED_FIELD_NUMBER: _ClassVar[int]
    FAILED_FIELD_NUMBER: _ClassVar[int]
    OFFLINE_FIELD_NUMBER: _ClassVar[int]
    IMAGES_PER_SECOND_FIELD_NUMBER: _ClassVar[int]
    ETA_SECONDS_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    PRETRAINED_FIELD_NUMBER: _ClassVar[int]
    DIM_FIELD_NUMBER: _ClassVar[int]
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    ROOTS_FIELD_NUMBER: _ClassVar[int]
    DATABASE_FIELD_NUMBER: _ClassVar[int]
    DATABASE_BYTES_FIELD_NUMBER: _ClassVar[int]
    STARTED_AT_FIELD_NUMBER: _ClassVar[int]
    PROBLEM_FIELD_NUMBER: _ClassVar[int]
    WEB_URL_FIELD_NUMBER: _ClassVar[int]
    state: Status.State
    version: str
    indexed: int
    queued: int
    failed: int
    offline: int
    images_per_second: float
    eta_seconds: float
    model: str
    pretrained: str
    dim: int
    device: str
    roots: _containers.RepeatedScalarFieldContainer[str]
    database: str
    database_bytes: int
    started_at: float
    problem: str
    web_url: str
    def __init__(self, state: _Optional[_Union[Status.State, str]] = ..., version: _Optional[str] = ..., indexed: _Optional[int] = ..., queued: _Optional[int] = ..., failed: _Optional[int] = ..., offline: _Optional[int] = ..., images_per_second: _Optional[float] = ..., eta_seconds: _Optional[float] = ..., model: _Optional[str] = ..., pretrained: _Optional[str] = ..., dim: _Optional[int] = ..., device: _Optional[str] = ..., roots: _Optional[_Iterable[str]] = ..., database: _Optional[str] = ..., database_bytes: _Optional[int] = ..., started_at: _Optional[float] = ..., problem: _Optional[str] = ..., web_url: _Optional[str] = ...) -> None: ...

class ReindexRequest(_message.Message):
    __slots__ = ("paths", "wait")
    PATHS_FIELD_NUMBER: _ClassVar[int]
    WAIT_FIELD_NUMBER: _ClassVar[int]
    paths: _containers.RepeatedScalarFieldContainer[str]
    wait: bool
    def __init__(self, paths: _Optional[_Iterable[str]] = ..., wait: _Optional[bool] = ...) -> None: ...

class ReindexResponse(_message.Message):
    __slots__ = ("queued", "removed", "indexed", "failed")
    QUEUED_FIELD_NUMBER: _ClassVar[int]
    REMOVED_FIELD_NUMBER: _ClassVar[int]
    INDEXED_FIELD_NUMBER: _ClassVar[int]
    FAILED_FIELD_NUMBER: _ClassVar[int]
    queued: int
    removed: int
    indexed: int
    failed: int
    def __init__(self, queued: _Optional[int] = ..., removed: _Optional[int] = ..., indexed: _Optional[int] = ..., failed: _Optional[int] = ...) -> None: ...

class EmbedRequest(_message.Message):
    __slots__ = ("text", "image", "path")
    TEXT_FIELD_NUMBER: _ClassVar[int]
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    text: str
    image: bytes
    path: str
    def __init__(self, text: _Optional[str] = ..., image: _Optional[bytes] = ..., path: _Optional[str] = ...) -> None: ...

class EmbedResponse(_message.Message):
    __slots__ = ("vector", "model", "pretrained")
    VECTOR_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    PRETRAINED_FIELD_NUMBER: _ClassVar[int]
    vector: _containers.RepeatedScalarFieldContainer[float]
    model: str
    pretrained: str
    def __init__(self, vector: _Optional[_Iterable[float]] = ..., model: _Optional[str] = ..., pretrained: _Optional[str] = ...) -> None: ...

class ListFailuresRequest(_message.Message):
    __slots__ = ("limit", "offset")
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    limit: int
    offset: int
    def __init__(self, limit: _Optional[int] = ..., offset: _Optional[int] = ...) -> None: ...

class Failure(_message.Message):
    __slots__ = ("path", "error", "message", "attempts", "last_seen")
    PATH_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    LAST_SEEN_FIELD_NUMBER: _ClassVar[int]
    path: str
    error: str
    message: str
    attempts: int
    last_seen: float
    def __init__(self, path: _Optional[str] = ..., error: _Optional[str] = ..., message: _Optional[str] = ..., attempts: _Optional[int] = ..., last_seen: _Optional[float] = ...) -> None: ...

class ListFailuresResponse(_message.Message):
    __slots__ = ("failures", "total")
    FAILURES_FIELD_NUMBER: _ClassVar[int]
    TOTAL_FIELD_NUMBER: _ClassVar[int]
    failures: _containers.RepeatedCompositeFieldContainer[Failure]
    total: int
    def __init__(self, failures: _Optional[_Iterable[_Union[Failure, _Mapping]]] = ..., total: _Optional[int] = ...) -> None: ...

class ThumbnailRequest(_message.Message):
    __slots__ = ("path", "max_side", "format", "host")
    class Format(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        FORMAT_UNSPECIFIED: _ClassVar[ThumbnailRequest.Format]
        PNG: _ClassVar[ThumbnailRequest.Format]
        SIXEL: _ClassVar[ThumbnailRequest.Format]
    FORMAT_UNSPECIFIED: ThumbnailRequest.Format
    PNG: ThumbnailRequest.Format
    SIXEL: ThumbnailRequest.Format
    PATH_FIELD_NUMBER: _ClassVar[int]
    MAX_SIDE_FIELD_NUMBER: _ClassVar[int]
    FORMAT_FIELD_NUMBER: _ClassVar[int]
    HOST_FIELD_NUMBER: _ClassVar[int]
    path: str
    max_side: int
    format: ThumbnailRequest.Format
    host: str
    def __init__(self, path: _Optional[str] = ..., max_side: _Optional[int] = ..., format: _Optional[_Union[ThumbnailRequest.Format, str]] = ..., host: _Optional[str] = ...) -> None: ...

class ThumbnailResponse(_message.Message):
    __slots__ = ("data", "width", "height")
    DATA_FIELD_NUMBER: _ClassVar[int]
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    data: bytes
    width: int
    height: int
    def __init__(self, data: _Optional[bytes] = ..., width: _Optional[int] = ..., height: _Optional[int] = ...) -> None: ...

class DuplicatesRequest(_message.Message):
    __slots__ = ("threshold", "under", "tier", "limit", "offset")
    THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    UNDER_FIELD_NUMBER: _ClassVar[int]
    TIER_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    threshold: float
    under: _containers.RepeatedScalarFieldContainer[str]
    tier: DuplicateGroup.Tier
    limit: int
    offset: int
    def __init__(self, threshold: _Optional[float] = ..., under: _Optional[_Iterable[str]] = ..., tier: _Optional[_Union[DuplicateGroup.Tier, str]] = ..., limit: _Optional[int] = ..., offset: _Optional[int] = ...) -> None: ...

class DuplicateGroup(_message.Message):
    __slots__ = ("tier", "files")
    class Tier(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        TIER_UNSPECIFIED: _ClassVar[DuplicateGroup.Tier]
        EXACT: _ClassVar[DuplicateGroup.Tier]
        REENCODED: _ClassVar[DuplicateGroup.Tier]
        VARIANT: _ClassVar[DuplicateGroup.Tier]
    TIER_UNSPECIFIED: DuplicateGroup.Tier
    EXACT: DuplicateGroup.Tier
    REENCODED: DuplicateGroup.Tier
    VARIANT: DuplicateGroup.Tier
    TIER_FIELD_NUMBER: _ClassVar[int]
    FILES_FIELD_NUMBER: _ClassVar[int]
    tier: DuplicateGroup.Tier
    files: _containers.RepeatedCompositeFieldContainer[Hit]
    def __init__(self, tier: _Optional[_Union[DuplicateGroup.Tier, str]] = ..., files: _Optional[_Iterable[_Union[Hit, _Mapping]]] = ...) -> None: ...

class DuplicatesResponse(_message.Message):
    __slots__ = ("groups", "total", "unchecked")
    GROUPS_FIELD_NUMBER: _ClassVar[int]
    TOTAL_FIELD_NUMBER: _ClassVar[int]
    UNCHECKED_FIELD_NUMBER: _ClassVar[int]
    groups: _containers.RepeatedCompositeFieldContainer[DuplicateGroup]
    total: int
    unchecked: int
    def __init__(self, groups: _Optional[_Iterable[_Union[DuplicateGroup, _Mapping]]] = ..., total: _Optional[int] = ..., unchecked: _Optional[int] = ...) -> None: ...
