"""The OpenAPI 3.1 document of the HTTP API, served at /api/v1/openapi.json.

Written by hand next to the routes (clipd.web.api) rather than generated: the API is small, and
the tests fuzz every operation from this document, so a route it misdescribes fails them.
"""

from __future__ import annotations

from typing import Any

from clipd import clipd_version, duplicates
from clipd.queries import DEFAULT_FAILURES_LIMIT, DEFAULT_LIMIT, MAX_LIMIT, MAX_THUMBNAIL_SIDE
from clipd.thumbcache import THUMBNAIL_SIDE


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _param(name: str, schema: dict[str, Any], description: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "in": "query", "schema": schema, "description": description, **extra}


_ERRORS = {
    "400": _json(_ref("Error"), "the request is wrong; the message says what to change"),
    "401": _json(_ref("Error"), "no token, or the wrong one"),
    "403": _json(_ref("Error"), "a foreign Host, or a change requested from another Origin"),
    "413": _json(_ref("Error"), "an image or body over a size limit"),
    "503": _json(
        _ref("Error"),
        "not_ready: the model is still loading (see Retry-After); unavailable: try later",
    ),
}
_IMAGE_PART = {"type": "string", "contentMediaType": "image/*"}
_PATH = _param("path", {"type": "string"}, "an indexed image's absolute path", required=True)
_VERSION = _param("v", {"type": "string"}, "the hit's mtime: the answer is then cached for good")
_HOST = _param(
    "host",
    {"type": "string"},
    "the hit's machine (its `host`) when it is not this one: the picture is then the "
    "thumbnail that machine keeps in the shared index, since the file is not here",
)
_NOT_FOUND = {"404": _json(_ref("Error"), "the path is not an indexed image")}

_FILTERS = [
    _param("limit", {"type": "integer", "minimum": 0, "maximum": MAX_LIMIT},
           f"hits per page; 0 or absent: {DEFAULT_LIMIT}"),
    _param("offset", {"type": "integer", "minimum": 0}, "best hits to skip, for paging"),
    _param("min_score", {"type": "number", "minimum": -1, "maximum": 1},
           "drop hits whose cosine score is below this"),
    _param("under", {"type": "array", "items": {"type": "string"}},
           "only files at or below any of these absolute paths", style="form", explode=True),
    _param("ext", {"type": "string"}, "only these extensions, comma-separated: jpg,png"),
    _param("after", {"type": "number"}, "only photos taken at or after (Unix seconds; files "
           "without a capture time: modified), as clipq --since"),
    _param("before", {"type": "number"}, "only photos taken before, as clipq --until"),
    _param("host", {"type": "array", "items": {"type": "string"}},
           "only files of these machines (config host), as clipq --host", style="form",
           explode=True),
    _param("exact", {"type": "boolean"}, "compare every file that passes the filters instead "
           "of searching an approximate index (a shared PostgreSQL index), as clipq --exact"),
]  # fmt: skip

_FORM_FIELDS = {
    "q": {"type": "string"},
    "limit": {"type": "integer", "minimum": 0, "maximum": MAX_LIMIT},
    "offset": {"type": "integer", "minimum": 0},
    "min_score": {"type": "number", "minimum": -1, "maximum": 1},
    "under": {"type": "array", "items": {"type": "string"}},
    "ext": {"type": "string"},
    "after": {"type": "number"},
    "before": {"type": "number"},
    "host": {"type": "array", "items": {"type": "string"}},
    "exact": {"type": "boolean"},
}

_SCHEMAS: dict[str, Any] = {
    "Error": {
        "type": "object",
        "required": ["error"],
        "properties": {
            "error": {
                "type": "object",
                "required": ["kind", "message"],
                "properties": {
                    "kind": {
                        "enum": [
                            *("bad_request", "unauthenticated", "forbidden", "not_found"),
                            *("too_large", "not_ready", "unavailable", "internal"),
                        ]
                    },
                    "message": {"type": "string", "description": "for a person: what to do"},
                },
            }
        },
    },
    "Hit": {
        "type": "object",
        "required": ["path", "score", "width", "height", "size_bytes", "mtime"],
        "properties": {
            "path": {"type": "string"},
            "score": {"type": "number", "description": "cosine similarity; higher is better"},
            "width": {"type": "integer"},
            "height": {"type": "integer"},
            "size_bytes": {"type": "integer"},
            "mtime": {"type": "number", "description": "seconds since the epoch"},
            "taken": {
                "type": ["number", "null"],
                "description": "capture time (EXIF), seconds since the epoch; null if unknown",
            },
            "host": {
                "type": "string",
                "description": "the machine whose file this is (config host)",
            },
        },
    },
    "SearchResponse": {
        "type": "object",
        "required": ["hits", "partial", "took_ms", "nothing_indexed"],
        "properties": {
            "hits": {"type": "array", "items": _ref("Hit")},
            "partial": {"type": "boolean", "description": "still indexing: hits may miss files"},
            "took_ms": {"type": "number"},
            "nothing_indexed": {"type": "boolean", "description": "no file is searchable yet"},
            "host": {"type": "string", "description": "the answering daemon's machine"},
        },
    },
    "Term": {
        "type": "object",
        "description": "exactly one of text, image_base64, path; weight defaults to 1",
        "properties": {
            "text": {"type": "string"},
            "image_base64": {"type": "string", "contentEncoding": "base64"},
            "path": {"type": "string", "description": "an indexed image's absolute path"},
            "weight": {"type": "number"},
        },
    },
    "Status": {
        "type": "object",
        "description": "the fields of `clipq status --json`, plus web_url and upload_enabled",
        "properties": {
            "state": {"enum": ["starting", "indexing", "idle", "stopping"]},
            "version": {"type": "string"},
            "indexed": {"type": "integer"},
            "queued": {"type": "integer"},
            "failed": {"type": "integer"},
            "offline": {"type": "integer"},
            "images_per_second": {"type": "number"},
            "eta_seconds": {"type": "number"},
            "model": {"type": "string"},
            "pretrained": {"type": "string"},
            "dim": {"type": "integer"},
            "device": {"type": "string"},
            "roots": {"type": "array", "items": {"type": "string"}},
            "database": {"type": "string"},
            "database_bytes": {"type": "integer"},
            "started_at": {"type": "number"},
            "problem": {"type": "string"},
            "web_url": {"type": "string"},
            "upload_enabled": {"type": "boolean"},
        },
    },
}

_PATHS: dict[str, Any] = {
    "/api/v1/search": {
        "get": {
            "summary": "Search by words (clipq's query language) and/or indexed example images",
            "parameters": [
                _param("q", {"type": "string"}, "e.g. 'beach -people 2:sunset'"),
                _param(
                    "like",
                    {"type": "array", "items": {"type": "string"}},
                    "more like this: indexed paths whose stored vectors join the query; "
                    "another machine's file as HOST:/path (its stored vector, shared index)",
                    style="form",
                    explode=True,
                ),
                *_FILTERS,
            ],
            "responses": {"200": _json(_ref("SearchResponse"), "best hits first"), **_ERRORS},
        },
        "post": {
            "summary": "Search by an image (multipart) or by terms (JSON); the image is not kept",
            "requestBody": {
                "required": True,
                "content": {
                    "multipart/form-data": {
                        "schema": {
                            "type": "object",
                            "required": ["image"],
                            "properties": {
                                "image": _IMAGE_PART,
                                **_FORM_FIELDS,
                            },
                        }
                    },
                    "application/json": {
                        "schema": {
                            "type": "object",
                            "required": ["terms"],
                            "properties": {
                                "terms": {"type": "array", "items": _ref("Term")},
                                "limit": _FORM_FIELDS["limit"],
                                "offset": _FORM_FIELDS["offset"],
                                "min_score": _FORM_FIELDS["min_score"],
                                "under": _FORM_FIELDS["under"],
                                "extensions": {"type": "array", "items": {"type": "string"}},
                                "after": {"type": "number"},
                                "before": {"type": "number"},
                                "hosts": {"type": "array", "items": {"type": "string"}},
                                "exact": {"type": "boolean"},
                            },
                        }
                    },
                },
            },
            "responses": {"200": _json(_ref("SearchResponse"), "best hits first"), **_ERRORS},
        },
    },
    "/api/v1/status": {
        "get": {
            "summary": "Counts, queue, throughput, model, roots, database size",
            "responses": {"200": _json(_ref("Status"), "the daemon's status"), **_ERRORS},
        }
    },
    "/api/v1/status/events": {
        "get": {
            "summary": "The status as server-sent events: `event: status` on every change",
            "responses": {
                "200": {
                    "description": "one `event: status` with JSON data per change (at most 4/s), "
                    "a comment line after 5 s without one",
                    "content": {"text/event-stream": {"schema": {"type": "string"}}},
                },
                **_ERRORS,
            },
        }
    },
    "/api/v1/duplicates": {
        "get": {
            "summary": "Groups of near-identical images, each with its tier (never changes a file)",
            "parameters": [
                _param(
                    "threshold",
                    {"type": "number", "minimum": duplicates.MIN_THRESHOLD, "maximum": 1},
                    "the lowest CLIP cosine at which two images are compared; absent: "
                    f"{duplicates.DEFAULT_THRESHOLD}",
                ),
                _param(
                    "under",
                    {"type": "array", "items": {"type": "string"}},
                    "only files at or below any of these absolute paths",
                    style="form",
                    explode=True,
                ),
                _param(
                    "tier",
                    {"type": "string", "enum": list(duplicates.TIERS)},
                    "the loosest tier to group by; absent: variant",
                ),
                _param(
                    "limit",
                    {"type": "integer", "minimum": 0, "maximum": MAX_LIMIT},
                    f"groups per page; 0 or absent: {duplicates.DEFAULT_LIMIT}",
                ),
                _param("offset", {"type": "integer", "minimum": 0}, "groups to skip"),
            ],
            "responses": {
                "200": _json(
                    {
                        "type": "object",
                        "required": ["groups", "total", "unchecked"],
                        "properties": {
                            "groups": {"type": "array", "items": {"type": "object"}},
                            "total": {"type": "integer"},
                            "unchecked": {"type": "integer"},
                        },
                    },
                    "one page of groups, each {tier, files}, files being hits scored against "
                    "the group's first; unchecked: files not yet compared by pixels",
                ),
                **_ERRORS,
            },
        }
    },
    "/api/v1/failures": {
        "get": {
            "summary": "Files that could not be indexed, and why",
            "parameters": [
                _param(
                    "limit",
                    {"type": "integer", "minimum": 0, "maximum": MAX_LIMIT},
                    f"failures per page; 0 or absent: {DEFAULT_FAILURES_LIMIT}",
                ),
                _param("offset", {"type": "integer", "minimum": 0}, "failures to skip"),
            ],
            "responses": {
                "200": _json(
                    {
                        "type": "object",
                        "required": ["failures", "total"],
                        "properties": {
                            "failures": {"type": "array", "items": {"type": "object"}},
                            "total": {"type": "integer"},
                        },
                    },
                    "one page of failures (path, error, message, attempts, last_seen)",
                ),
                **_ERRORS,
            },
        }
    },
    "/api/v1/reindex": {
        "post": {
            "summary": "Rescan paths below a root (or every root); optionally wait until done",
            "requestBody": {
                "content": {
                    "application/json": {
                        "schema": {
                            "type": "object",
                            "properties": {
                                "paths": {"type": "array", "items": {"type": "string"}},
                                "wait": {"type": "boolean"},
                            },
                        }
                    }
                }
            },
            "responses": {
                "200": _json(
                    {"type": "object", "required": ["queued", "removed", "indexed", "failed"]},
                    "what the rescan did (indexed and failed only with wait)",
                ),
                **_ERRORS,
            },
        }
    },
    "/api/v1/thumbnail": {
        "get": {
            "summary": "A JPEG thumbnail of an indexed image, made once and cached",
            "parameters": [
                _PATH,
                _HOST,
                _param(
                    "size",
                    {"type": "integer", "minimum": 0, "maximum": MAX_THUMBNAIL_SIDE},
                    f"longer side at most; up to {THUMBNAIL_SIDE} (the default) is cached, "
                    "larger is made on every call",
                ),
                _VERSION,
            ],
            "responses": {
                "200": {"description": "the thumbnail", "content": {"image/jpeg": {}}},
                "304": {"description": "the ETag (If-None-Match) still matches"},
                **_NOT_FOUND,
                **_ERRORS,
            },
        }
    },
    "/api/v1/image": {
        "get": {
            "summary": "An indexed image: the file, or a JPEG for formats browsers cannot show",
            "parameters": [
                _PATH,
                _HOST,
                _VERSION,
            ],
            "responses": {
                "200": {"description": "the image", "content": {"image/*": {}}},
                "206": {"description": "the bytes a Range asked for (files sent as they are)"},
                "304": {"description": "the ETag (If-None-Match) still matches"},
                **_NOT_FOUND,
                **_ERRORS,
            },
        }
    },
    "/api/v1/embed": {
        "post": {
            "summary": "The L2-normalised embedding of a text, an image, or an indexed path",
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": _ref("Term")}},
            },
            "responses": {
                "200": _json(
                    {"type": "object", "required": ["vector", "model", "pretrained"]},
                    "the vector and the model that made it",
                ),
                **_ERRORS,
            },
        }
    },
    "/api/v1/upload": {
        "post": {
            "summary": "Add images to upload_dir (inside a root); off unless configured",
            "requestBody": {
                "required": True,
                "content": {
                    "multipart/form-data": {
                        "schema": {
                            "type": "object",
                            "required": ["file"],
                            "properties": {
                                "file": {"type": "array", "items": _IMAGE_PART}
                            },
                        }
                    }
                },
            },
            "responses": {
                "200": _json(
                    {"type": "object", "required": ["saved", "refused"]},
                    "the paths saved, and the files refused with a reason each",
                ),
                "404": _json(_ref("Error"), "upload_dir is not configured"),
                **_ERRORS,
            },
        }
    },
    "/api/v1/openapi.json": {
        "get": {
            "summary": "This document",
            "responses": {
                "200": {"description": "OpenAPI 3.1", "content": {"application/json": {}}}
            },
        }
    },
}  # fmt: skip

DOCUMENT: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {
        "title": "clipd HTTP API",
        "version": clipd_version(),
        "description": "Local semantic image search. Every operation needs the user's token: "
        "`Authorization: Bearer TOKEN` (TOKEN: the contents of token_file) or the session "
        "cookie the web app gets from `?token=`.",
    },
    "servers": [{"url": "/"}],
    "security": [{"bearer": []}],
    "components": {
        "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        "schemas": _SCHEMAS,
    },
    "paths": _PATHS,
}
