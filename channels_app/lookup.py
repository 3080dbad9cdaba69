"""Resolve a repository URL to its channel and published index file in one SQL statement.

The hot path of serving (index files and their 304s) used to cost three ORM queries per
request: the subchannel probe, the channel and the published file, mostly spent compiling
them. Here one hand-written statement, built once per shape, returns the channel row (a
subchannel and a same-named top-level channel both) together with the published files at
every path the request may mean (the path itself and what each package type's content
negotiation would make of it). Nothing is cached between requests, so every request sees the
channel's current privacy, freeze and published files: no invalidation to get wrong.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from functools import cache

import psycopg
from django.db import connection
from django.http import Http404, HttpRequest

from .formats import FORMATS
from .formats.base import IndexRequest
from .models import Artifact, Channel, Package, PublishedFile

NO_CHANNEL = "No such channel."
#: Where the fast path (channels_app.fast_path) leaves what it resolved when it hands a request
#: on to Django, so that the view does not resolve it again.
ENVIRON_KEY = "psm.resolved"


@dataclass(frozen=True, slots=True)
class Published:
    """A published index file, as serving needs it."""

    artifact: Artifact
    content_type: str
    published_at: datetime


@dataclass(frozen=True, slots=True)
class PackageFile:
    """A package file of a channel, as serving needs it: its row (`package`, with the columns
    read here only) and its stored bytes (`artifact`), None for a passive file not fetched
    yet."""

    artifact: Artifact | None
    package: Package


@dataclass(slots=True)
class Resolved:
    """The channel a URL names, the path inside it, and the file published there, if any."""

    channel: Channel
    inner: str
    negotiated: IndexRequest | None
    published: Published | None


_CHANNEL_FIELDS = tuple(Channel._meta.concrete_fields)
_CHANNEL_COLUMNS = tuple(f.column for f in _CHANNEL_FIELDS)
_CHANNEL_ATTNAMES = tuple(f.attname for f in _CHANNEL_FIELDS)
#: The model fields of the selected columns, in order, for the database's value converters.
_FIELDS = (
    *_CHANNEL_FIELDS,
    *(PublishedFile._meta.get_field(name) for name in ("path", "content_type", "published_at")),
    *(Artifact._meta.get_field(name) for name in ("id", "sha256", "size")),
)


_READ = {"id", "channel_id", "unit", "filename", "excluded_reason", "added_at", "on_demand",
         "removed", "sha256", "md5", "size", "upstream_url", "artifact_id"}  # fmt: skip
#: The Package columns `package_file` reads (the artifact's follow), in the model's order
#: (`Model.from_db` takes the values of some fields in that order).
_PACKAGE_ATTNAMES = tuple(f.attname for f in Package._meta.concrete_fields if f.attname in _READ)
_PACKAGE_FIELDS = (
    *(Package._meta.get_field(name) for name in _PACKAGE_ATTNAMES),
    *(Artifact._meta.get_field(name) for name in ("sha256", "size")),
)


@cache
def _converters(vendor: str, fields: tuple) -> tuple[tuple[int, list, object], ...]:
    """(column, converters, expression) for the columns the database returns raw (SQLite's
    dates and JSON, for instance), as the ORM would convert them."""
    found = []
    for index, field in enumerate(fields):
        expression = field.get_col(field.model._meta.db_table)
        converters = connection.ops.get_db_converters(expression)
        converters += expression.get_db_converters(connection)
        if converters:
            found.append((index, converters, expression))
    return tuple(found)


def _convert(row: tuple, fields: tuple = _FIELDS) -> list:
    values = list(row)
    for index, converters, expression in _converters(connection.vendor, fields):
        for converter in converters:
            values[index] = converter(values[index], expression, connection)
    return values


@cache
def _statement(paths: int, subchannel: bool) -> str:
    """The statement for `paths` candidate paths; with `subchannel`, also `<parent>/<name>`."""
    channel, published = Channel._meta.db_table, PublishedFile._meta.db_table
    artifact = Artifact._meta.db_table
    columns = ", ".join(f"c.{column}" for column in _CHANNEL_COLUMNS)
    where = "(c.parent_id IS NULL AND c.name = %s)"
    if subchannel:
        where += " OR (p.parent_id IS NULL AND p.name = %s AND c.name = %s)"
    marks = ", ".join(["%s"] * paths)
    return (
        f"SELECT {columns}, f.path, f.content_type, f.published_at, a.id, a.sha256, a.size "
        f"FROM {channel} c LEFT JOIN {channel} p ON p.id = c.parent_id "
        f"LEFT JOIN {published} f ON f.channel_id = c.id AND f.path IN ({marks}) "
        f"LEFT JOIN {artifact} a ON a.id = f.artifact_id WHERE {where}"
    )


def fetch_prepared(sql: str, params: list) -> list[tuple]:
    """Run the statement, returning its rows; on PostgreSQL as a prepared statement of the
    connection, since planning its joins costs several times its execution (about 1.2 ms
    against 0.2 ms)."""
    if connection.vendor != "postgresql" or connection.settings_dict.get(
        "DISABLE_SERVER_SIDE_CURSORS"
    ):
        # Not PostgreSQL, or behind a transaction pooler (Django's setting for pgbouncer),
        # where a statement prepared on one server connection is unknown on the next.
        with connection.cursor() as cursor:
            cursor.execute(sql, params)
            return cursor.fetchall()
    connection.ensure_connection()
    raw = connection.connection
    if raw.prepare_threshold is None:
        # Django turns preparing off; allow it for explicit requests only (its own cursors
        # bind on the client side, which never prepares).
        raw.prepare_threshold = 2**31 - 1
    with connection.wrap_database_errors, psycopg.Cursor(raw) as cursor:
        cursor.execute(sql, params, prepare=True)
        return cursor.fetchall()


def _candidates(inner: str, accept: str | None) -> dict[str, IndexRequest | None]:
    """Every path `inner` may be served from, by package type: its negotiation per kind."""
    return {kind: fmt.index_request(inner, accept) for kind, fmt in FORMATS.items()}


def resolve(path: str, accept: str | None) -> Resolved:
    """The channel and published file for `/api/repo/<path>`; Http404 for no such channel.

    A subchannel wins over a same-named folder of its parent (`<parent>/<sub>/<file>`).
    """
    parts = path.split("/")
    if len(parts) < 2:
        raise Http404(NO_CHANNEL)
    inners = {False: "/".join(parts[1:])}
    if len(parts) >= 3:
        inners[True] = "/".join(parts[2:])
    negotiations = {sub: _candidates(inner, accept) for sub, inner in inners.items()}
    paths = set(inners.values())
    for by_kind in negotiations.values():
        paths.update(n.path for n in by_kind.values() if n is not None and n.path)
    params: list[object] = sorted(paths) + [parts[0]]
    if len(parts) >= 3:
        params += [parts[0], parts[1]]
    rows = [
        _convert(row) for row in fetch_prepared(_statement(len(paths), len(parts) >= 3), params)
    ]
    if not rows:
        raise Http404(NO_CHANNEL)
    width = len(_CHANNEL_COLUMNS)
    parent_at = _CHANNEL_ATTNAMES.index("parent_id")
    # A subchannel's rows first: it hides its parent's folder of the same name.
    rows.sort(key=lambda row: row[parent_at] is None)
    sub = rows[0][parent_at] is not None
    channel_id = rows[0][0]
    mine = [row for row in rows if row[0] == channel_id]
    channel = Channel.from_db(connection.alias, list(_CHANNEL_ATTNAMES), mine[0][:width])
    inner = inners[sub]
    negotiated = negotiations[sub].get(channel.kind)
    wanted = negotiated.path if negotiated is not None and negotiated.path else inner
    published = None
    for row in mine:
        file_path, content_type, published_at, artifact_id, sha256, size = row[width:]
        if file_path == wanted and artifact_id is not None:
            artifact = Artifact(id=artifact_id, sha256=sha256, size=size)
            artifact._state.adding, artifact._state.db = False, connection.alias
            published = Published(artifact, content_type, published_at)
            break
    return Resolved(channel, inner, negotiated, published)


def resolved_for(request: HttpRequest, path: str) -> Resolved | None:
    """What the fast path already resolved for this request's `path` and Accept, if anything."""
    found = request.META.get(ENVIRON_KEY)
    if found is not None and found[0] == path and found[1] == request.META.get("HTTP_ACCEPT"):
        return found[2]
    return None


@cache
def _package_statement() -> str:
    package, artifact = Package._meta.db_table, Artifact._meta.db_table
    columns = ", ".join(f"p.{Package._meta.get_field(name).column}" for name in _PACKAGE_ATTNAMES)
    return (
        f"SELECT {columns}, a.sha256, a.size FROM {package} p "
        f"LEFT JOIN {artifact} a ON a.id = p.artifact_id "
        "WHERE p.channel_id = %s AND p.unit = %s AND p.filename = %s"
    )


def package_file(channel_id: int, unit: str, filename: str) -> PackageFile | None:
    """The channel's package file at `unit/filename`, stored or passive, in one prepared
    statement; None when the channel has no such file."""
    rows = fetch_prepared(_package_statement(), [channel_id, unit, filename])
    if not rows:
        return None
    values = _convert(rows[0], _PACKAGE_FIELDS)
    package = Package.from_db(connection.alias, list(_PACKAGE_ATTNAMES), values[:-2])
    artifact = None
    if package.artifact_id is not None:
        artifact = Artifact(id=package.artifact_id, sha256=values[-2], size=values[-1])
        artifact._state.adding, artifact._state.db = False, connection.alias
    return PackageFile(artifact, package)


@cache
def _stored_statement() -> str:
    package, artifact = Package._meta.db_table, Artifact._meta.db_table
    return (
        f"SELECT p.artifact_id IS NOT NULL OR EXISTS (SELECT 1 FROM {artifact} a "
        f"WHERE a.sha256 = %s AND a.sha256 <> '') FROM {package} p WHERE p.id = %s"
    )


def is_stored(package: Package) -> bool:
    """Whether the package's file is stored now (another request may have fetched it, or the
    same file under another name), in one prepared statement: the first request's path is
    short."""
    rows = fetch_prepared(_stored_statement(), [package.sha256, package.pk])
    return bool(rows and rows[0][0])
