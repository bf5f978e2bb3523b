"""PostgreSQL connection URLs in the config: recognised, kept whole, shown without passwords.

`database: postgresql://user:secret@server/clipd` selects the shared store (clipd.pgstore).
The URL is handed to libpq as it is, so everything libpq reads works: a password in the URL,
in ~/.pgpass (or $PGPASSFILE), or in $PGPASSWORD; sslmode and the other parameters. Whatever
a person can read (logs, status, check-config, errors) gets redacted() instead.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

SCHEMES = ("postgresql://", "postgres://")
_HIDDEN = "***"
# A password wherever libpq reads one from a URL: in the user part, or as a parameter.
_SECRET_PARAMS = ("password", "sslpassword")


def is_postgres_url(text: str) -> bool:
    return text.startswith(SCHEMES)


def redact(text: str) -> str:
    """`text` with any password of a PostgreSQL URL in it replaced by ***."""
    return re.sub(r"postgres(?:ql)?://\S+", lambda found: _redact_url(found.group(0)), text)


def _redact_url(url: str) -> str:
    parts = urlsplit(url)
    netloc = parts.netloc
    userinfo, at, hosts = netloc.rpartition("@")
    if at and ":" in userinfo:
        netloc = f"{userinfo.split(':', 1)[0]}:{_HIDDEN}@{hosts}"
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        if any(key in _SECRET_PARAMS for key, _ in pairs):
            hidden = [(k, _HIDDEN if k in _SECRET_PARAMS else v) for k, v in pairs]
            query = urlencode(hidden, safe="*")
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


@dataclass(frozen=True, slots=True)
class PostgresDatabase:
    """A PostgreSQL database named by a libpq URL. str() never shows its password."""

    url: str

    def __str__(self) -> str:
        return redact(self.url)

    def __repr__(self) -> str:
        return f"PostgresDatabase({str(self)!r})"
