"""A search's filters as SQL, written once for both stores.

SQLite (clipd.store) and PostgreSQL (clipd.pgschema) must let exactly the same files through a
filter; they differ only in how a parameter is marked, which LIKE ignores case, and where a
file's host is (a column in the shared store; the one configured host for a SQLite file).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from clipd.records import SearchFilter

# When a photo was taken if it says, else when its file was last modified.
TAKEN_ELSE_MTIME = "coalesce(f.taken_ns, f.mtime_ns)"


@dataclass(frozen=True)
class Dialect:
    mark: str  # a parameter's placeholder
    like: str  # a LIKE that ignores ASCII case
    host_column: str | None  # None: every row is the store's own host's


SQLITE = Dialect(mark="?", like="LIKE", host_column=None)
POSTGRES = Dialect(mark="%s", like="ILIKE", host_column="f.host")


def prefix_condition(
    prefixes: Sequence[str], column: str, dialect: Dialect
) -> tuple[str, list[object]]:
    """SQL matching `column` (ordered by bytes) equal to or below any of the absolute prefixes."""
    mark = dialect.mark
    clauses: list[str] = []
    params: list[object] = []
    for prefix in prefixes:
        base = prefix.rstrip("/")
        # '0' sorts right after '/', so [base/, base0) is exactly "inside base/".
        clauses.append(f"({column} = {mark} OR ({column} >= {mark} AND {column} < {mark}))")
        params += [base or "/", base + "/", base + "0"]
    return "(" + " OR ".join(clauses) + ")", params


def filter_condition(
    where: SearchFilter, dialect: Dialect, host: str = ""
) -> tuple[str, list[object]]:
    """SQL over `files f` selecting the online files that `where` lets through; `host` is the
    store's own machine, for a dialect whose rows carry no host."""
    mark = dialect.mark
    clauses = ["f.state = 'ok'"]
    params: list[object] = []
    if where.hosts:
        marks = ", ".join(mark for _ in where.hosts)
        if dialect.host_column is None:
            clauses.append(f"{mark} IN ({marks})")
            params.append(host)
        else:
            clauses.append(f"{dialect.host_column} IN ({marks})")
        params += where.hosts
    if where.under:
        clause, prefix_params = prefix_condition(where.under, "f.path", dialect)
        clauses.append(clause)
        params += prefix_params
    if where.extensions:
        # Extensions are plain alphanumerics (checked by the query core): nothing to escape.
        clauses.append(
            "(" + " OR ".join(f"f.path {dialect.like} {mark}" for _ in where.extensions) + ")"
        )
        params += [f"%.{ext}" for ext in where.extensions]
    bounds = (
        (f"f.mtime_ns >= {mark}", where.modified_after_ns),
        (f"f.mtime_ns < {mark}", where.modified_before_ns),
        (f"{TAKEN_ELSE_MTIME} >= {mark}", where.taken_after_ns),
        (f"{TAKEN_ELSE_MTIME} < {mark}", where.taken_before_ns),
    )
    for clause, bound in bounds:
        if bound is not None:
            clauses.append(clause)
            params.append(bound)
    return " AND ".join(clauses), params
