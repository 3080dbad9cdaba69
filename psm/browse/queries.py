"""What the browser reads: the channels a visitor may know and their served packages.

"Served" is `channels_app.models.SERVED`, the rows a published index lists; every list and
count here comes from it, through the partial index `package_served_name` (index-only scans of
a channel's served names). A page reads one page of names and then only those names' rows.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import cmp_to_key

from django.core.paginator import Page, Paginator
from django.db import connection
from django.db.models import Count, F, Max, QuerySet, Sum
from django.db.models.functions import Coalesce
from django.http import Http404

from channels_app.models import FILE_BYTES, SERVED, Channel, Package
from channels_app.permissions import visible_channels
from policies_app.ecosystems import ECOSYSTEMS


def readable_channels(user) -> QuerySet[Channel]:
    """The channels (and subchannels) `user` may read as package clients do: public ones for
    anyone, the others per `channels_app.permissions.may_know` (the repository's own rule)."""
    channels = Channel.objects.select_related("parent")
    # Each channel followed by its subchannels.
    family = Coalesce("parent__name", "name")
    return visible_channels(user, channels).order_by(
        family, F("parent_id").asc(nulls_first=True), "name"
    )


def readable_channel(user, path: str) -> Channel:
    """The channel at `path` if `user` may read it; else Http404, as for a missing channel."""
    try:
        return readable_channels(user).get_by_path(path)
    except Channel.DoesNotExist:
        raise Http404("No such channel.") from None


def served(channel: Channel) -> QuerySet[Package]:
    """The channel's served packages (files)."""
    return Package.objects.filter(SERVED, channel=channel)


def package_names(channel: Channel, search: str = "") -> QuerySet:
    """The names of the channel's served packages, in order; with `search`, those containing
    it (case-insensitive; spelled as the package type stores names: `Alpha_Pkg` finds Python's
    `alpha-pkg`). What a page of the list shows and counts (`names_page`)."""
    rows = served(channel)
    if search:
        rows = rows.filter(name__icontains=_stored_spelling(channel, search))
    return rows.order_by("name").values_list("name", flat=True).distinct()


def _stored_spelling(channel: Channel, search: str) -> str:
    ecosystem = ECOSYSTEMS.get(channel.kind)
    return ecosystem.normalize(search) if ecosystem else search


def names_page(channel: Channel, search: str, number: str | int | None, per_page: int) -> Page:
    """A page of `package_names(channel, search)`, with its total, in one scan of the served
    names: the names are made distinct first and only then matched (a 600,000-file channel has
    some 30,000 names to match, not 600,000 rows), and counted by a window over the matches."""
    names = package_names(channel)
    sql, params = names.query.sql_with_params()
    # OFFSET 0 keeps PostgreSQL from matching before DISTINCT (SQLite wants a LIMIT with it).
    fence = " OFFSET 0" if connection.vendor == "postgresql" else ""
    where, match = "", []
    if search:
        pattern = connection.ops.prep_for_like_query(_stored_spelling(channel, search))
        where, match = "WHERE UPPER(n.name) LIKE UPPER(%s) ESCAPE '\\'", [f"%{pattern}%"]

    def read(index: int) -> tuple[list[str], int | None]:
        query = (
            f"SELECT n.name, COUNT(*) OVER () FROM ({sql}{fence}) n {where} "
            "ORDER BY n.name LIMIT %s OFFSET %s"
        )
        with connection.cursor() as cursor:
            cursor.execute(query, [*params, *match, per_page, index * per_page])
            rows = cursor.fetchall()
        return [name for name, _ in rows], rows[0][1] if rows else None

    try:
        wanted = max(int(number or 1), 1)
    except ValueError:
        wanted = 1
    found, total = read(wanted - 1)
    if total is None:  # past the end (or nothing matches): the last page, as get_page does
        total = package_names(channel, search).count()
        wanted = max((total + per_page - 1) // per_page, 1)
        found, _ = read(wanted - 1) if total else ([], 0)
    page = Paginator(range(total), per_page).get_page(wanted)
    page.object_list = found
    return page


def name_counts(channels: Iterable[Channel]) -> dict[int, int]:
    """Channel id -> its number of served package names (`package_names(channel).count()`),
    for many channels in one query."""
    ids = [channel.pk for channel in channels]
    if not ids:
        return {}
    pairs = Package.objects.filter(SERVED, channel_id__in=ids).values("channel_id", "name")
    sql, params = pairs.order_by().distinct().query.sql_with_params()
    with connection.cursor() as cursor:
        # DISTINCT in a subquery reads the index in order; COUNT(DISTINCT) would sort it all.
        cursor.execute(f"SELECT channel_id, COUNT(*) FROM ({sql}) names GROUP BY 1", params)
        return dict(cursor.fetchall())


def sort_versions(kind: str, versions: Iterable[str]) -> list[str]:
    """Versions newest first, by the package type's own order (rattler for conda, PEP 440,
    R's numeric_version); versions it cannot read come last, newest text first."""
    ecosystem = ECOSYSTEMS.get(kind)

    def order(a: str, b: str) -> int:
        try:
            return ecosystem.compare(a, b)
        except Exception:  # an unreadable version: each ecosystem raises its own error
            readable = [_readable(ecosystem, v) for v in (a, b)]
            if readable[0] != readable[1]:
                return 1 if readable[0] else -1
            return (a > b) - (a < b)

    unique = set(versions)
    if ecosystem is None:
        return sorted(unique, reverse=True)
    return sorted(unique, key=cmp_to_key(order), reverse=True)


def _readable(ecosystem, version: str) -> bool:
    try:
        ecosystem.compare(version, version)
    except Exception:
        return False
    return True


@dataclass
class Summary:
    """One line of a channel's package list."""

    name: str
    latest: str = ""
    files: int = 0
    platforms: list[str] = field(default_factory=list)


def summaries(channel: Channel, names: Sequence[str]) -> list[Summary]:
    """The latest version, the file count and the units (conda platforms) of each name of
    a page, in one query over those names' rows."""
    rows = (
        served(channel)
        .filter(name__in=names)
        .order_by()
        .values_list("name", "version", "unit")
        .annotate(n=Count("pk"))
    )
    versions: dict[str, set[str]] = {name: set() for name in names}
    found = {name: Summary(name) for name in names}
    units: dict[str, set[str]] = {name: set() for name in names}
    for name, version, unit, count in rows:
        versions[name].add(version)
        units[name].add(unit)
        found[name].files += count
    for name, summary in found.items():
        ordered = sort_versions(channel.kind, versions[name])
        summary.latest = ordered[0] if ordered else ""
        summary.platforms = sorted(units[name])
    return [found[name] for name in names]


@dataclass
class Version:
    """One version of a package: its files (unit, filename, size, when added)."""

    version: str
    files: list[dict] = field(default_factory=list)

    @property
    def size(self) -> int:
        return sum(f["bytes"] or 0 for f in self.files)

    @property
    def units(self) -> list[str]:
        return sorted({f["unit"] for f in self.files})


def package_versions(channel: Channel, name: str) -> list[str]:
    """The served versions of a package, newest first; empty: not served here."""
    rows = served(channel).filter(name=name).order_by().values_list("version", flat=True)
    return sort_versions(channel.kind, rows.distinct())


def version_files(channel: Channel, name: str, versions: Sequence[str]) -> list[Version]:
    """The files of these versions of a package, in the versions' order."""
    found = {version: Version(version) for version in versions}
    rows = (
        served(channel)
        .filter(name=name, version__in=versions)
        .order_by("unit", "filename")
        .values("version", "unit", "filename", "added_at", bytes=FILE_BYTES)
    )
    for row in rows:
        found[row["version"]].files.append(row)
    return [found[version] for version in versions]


def package_totals(channel: Channel, name: str) -> dict:
    """The package's served file count, their total size and when one was last added."""
    return (
        served(channel)
        .filter(name=name)
        .aggregate(files=Count("pk"), size=Sum(FILE_BYTES), added=Max("added_at"))
    )
