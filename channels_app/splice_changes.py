"""What changed in a unit's rows since a render, for a publish to splice into the file it left.

A render notes where PostgreSQL's transactions stood when it began (`render_mark`): every row
written since has a newer transaction id. The next publish reads, in one snapshot, which of the
unit's rows changed since then and, for each, its served member now and its nearest unchanged
neighbours in the section (`changes_since`), which the format finds in the old file's bytes
and splices between (`formats.conda_render.splice_sections`). PostgreSQL only.

Two ways to know what changed:
- *told*: the table says so itself (migration 0021: each row's `written_xid`, kept by its
  default and a trigger, and a log of the rows deleted or moved, `psm_package_gone`). An index
  finds the changed rows: a few thousand read of a subdir's hundreds of thousands.
- *checked*: one pass over all the unit's rows, by their `xmin` (which no trigger keeps, so no
  write escapes it, not even one made with the table's triggers off), with each section's
  length now, which the splice must come to (so a row gone untold is caught). Every
  CHECK_EVERY-th splice of a file is checked, so what the log was not told is in the file for
  at most that many publishes.
"""

from __future__ import annotations

import re
from typing import Any

from django.db import connection, transaction

from psm.own_connection import on_own_connection

from .formats.base import Gap, SectionChanges
from .models import Package

#: A mark whose snapshot is this many transactions old is not trusted (transaction ids are 32
#: bits on disk; within this span, with room for the transactions begun since, the ages that
#: tell a row changed since are exact).
MARK_SPAN = 1 << 30

#: What a render reads in PostgreSQL terms: below `xmin` every transaction had ended when it
#: began (subtransactions included: a subtransaction's id is above its parent's); `server`
#: tells this database on this server run apart from a restored copy, whose ids start anew;
#: `snapshot` says exactly which transactions it saw (those it did not are the changes a splice
#: is told of; below `xmin` it saw every one).
_MARK_SQL = (
    "SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint, "
    "(SELECT oid FROM pg_database WHERE datname = current_database())::text || '@' || "
    "pg_postmaster_start_time()::text, pg_current_snapshot()::text"
)


def render_mark() -> dict[str, Any]:
    with connection.cursor() as cursor:
        cursor.execute(_MARK_SQL)
        xmin, server, snapshot = cursor.fetchone()
    return {"xmin": xmin, "server": server, "snapshot": snapshot}


#: Whether a row version was written since the mark: its `xmin` (32 bits) at most 2^31 after
#: the mark's, modulo 2^32, which is exact within MARK_SPAN. (A row frozen long ago keeps its
#: `xmin`, so one 2^31 transactions older than the mark reads as changed: more work, the
#: same bytes.) Plain arithmetic, unlike `age()`: PostgreSQL may scan the rows in parallel.
_CHANGED = "(({row}.xmin::text::bigint - %(mark32)s) & 4294967295) < 2147483648"
#: `models.SERVED` in SQL, for a row alias.
_SERVED = (
    "(NOT {row}.removed AND {row}.excluded_reason = '' "
    "AND ({row}.artifact_id IS NOT NULL OR {row}.on_demand))"
)
#: A row's member of its section's JSON object, as `PackageIndexSource.json_members` has it.
_MEMBER = "to_json({row}.filename)::text || ':' || {row}.record"

#: Changed rows beyond which a unit's file is rendered whole (bounds the memory they take).
SPLICE_LIMIT = 100_000

#: A file spliced this many times from what the table told is spliced next from a pass over
#: its unit's rows, which checks it.
CHECK_EVERY = 8

#: Whether a transaction (its 64-bit id, a column of the table's) is one the marked render did
#: not see (the index finds those from its `xmin` on).
_UNSEEN = (
    "({row}.{column} >= %(mark)s "
    "AND NOT pg_visible_in_snapshot({row}.{column}::text::xid8, %(snapshot)s::pg_snapshot))"
)
#: A snapshot as PostgreSQL writes it (`xmin:xmax:xip,...`).
_SNAPSHOT = re.compile(r"[0-9]{1,20}:[0-9]{1,20}:(?:[0-9]{1,20}(?:,[0-9]{1,20})*)?")
#: Whether a row was written since the mark, as the table tells it.
_WRITTEN = _UNSEEN.replace("{column}", "written_xid")


def changes_since(
    channel: int,
    unit: str,
    xmin: int,
    suffixes: tuple[str, ...],
    limit: int,
    *,
    snapshot: str | None = None,
    neighbours: bool = True,
) -> list[SectionChanges] | None:
    """The unit's rows changed since the snapshot whose `xmin` is given, by section (one per
    suffix), all read in one snapshot: as the table tells them where the whole `snapshot` is
    given, else checked by a pass (see the module's docstring); None if more than `limit`
    changed, if a TRUNCATE told of none, or if called inside a transaction (the snapshot needs
    one of its own).

    Every changed row, whatever its state now, lies in a gap between two neighbours of its
    section that are served and unchanged (so the old file lists them, in the same order);
    each gap comes with its neighbours' members and the members of its rows served now, in
    the database's order of file names (its collation, as the full render's ORDER BY). The
    changed rows' package names come too (`SectionChanges.names`), and the rows themselves
    (`SectionChanges.rows`): all a caller that knows where the old file's members lie needs
    (`neighbours=False`: no gaps, no probes)."""
    if connection.in_atomic_block:
        return None
    table = Package._meta.db_table
    section = (
        "CASE "
        + " ".join(f"WHEN {{row}}.filename LIKE %(s{i})s THEN {i}" for i in range(len(suffixes)))
        + " END"
    )
    parts = {"served": _SERVED, "section": section, "member": _MEMBER}
    told = snapshot is not None
    parts["changed"] = _WRITTEN if told else _CHANGED
    p = {name: text.format(row="p") for name, text in parts.items()}
    q = {name: text.format(row="q") for name, text in parts.items()}
    # A changed row's nearest row of its section either way that is changed or served: the
    # neighbour itself if it is unchanged, else the changed one next to it, which shares its
    # neighbour (a probe of a row or two, where a search for the unchanged one would walk
    # every changed row between).
    near = (
        f"SELECT {q['changed']} AS changed, "
        f"CASE WHEN NOT {q['changed']} THEN {q['member']} END AS member "
        f"FROM {table} q WHERE q.channel_id = %(channel)s AND q.unit = %(unit)s "
        f"AND {q['section']} = c.section AND ({q['served']} OR {q['changed']}) "
    )
    probes = (
        "SELECT c.i, a.changed, a.member, b.changed, b.member "
        "FROM unnest(%(filenames)s::text[], %(sections)s::int[]) WITH ORDINALITY "
        "AS c(filename, section, i) "
        f"LEFT JOIN LATERAL ({near} AND q.filename < c.filename "
        "ORDER BY q.filename DESC LIMIT 1) a ON true "
        f"LEFT JOIN LATERAL ({near} AND q.filename > c.filename "
        "ORDER BY q.filename LIMIT 1) b ON true"
    )
    params: dict[str, Any] = {"channel": channel, "unit": unit, "limit": limit}
    params["mark32"], params["mark"], params["snapshot"] = xmin % (1 << 32), xmin, snapshot
    params.update({f"s{i}": "%" + _like_escaped(suffix) for i, suffix in enumerate(suffixes)})
    with transaction.atomic(), connection.cursor() as cursor:
        # The pass and the probes read one snapshot (shared with a connection that helps).
        cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        cursor.execute("SET LOCAL jit = off")  # compiling costs more than it saves here
        counts_now = sizes_now = None
        if told:
            changed = _told(cursor, p, section.format(row="t"), params)
            if changed is None:
                return None
        else:
            checked = _pass(cursor, p, len(suffixes), params)
            if checked is None:
                return None
            *changed, (*_, counts_now, sizes_now, _) = checked
        around = (
            _neighbours(cursor, probes, params, [(row[3], row[2]) for row in changed])
            if neighbours
            else [()] * len(changed)
        )
    sections = []
    for index in range(len(suffixes)):
        rows: list[tuple] = []
        members: list[tuple[str, bytes | None]] = []
        names: dict[str, bool] = {}
        for (_, _, row_section, filename, name, member, *_), sides in zip(
            changed, around, strict=True
        ):
            if row_section == index:
                if neighbours:
                    rows.append((member, *sides))
                members.append((filename, None if member is None else member.encode()))
                names[name] = names.get(name, False) or member is not None  # served now
        length = None  # told: nothing to count against
        if counts_now is not None:
            length = int(sizes_now[index] or 0) + max(counts_now[index] - 1, 0)
        gaps = _gaps(rows) if neighbours else None
        sections.append(SectionChanges(gaps, length, names, members))
    return sections


#: File names that a collation other than byte order sorts otherwise (case, punctuation,
#: digits, a name that begins another, beyond ASCII).
_ORDER_PROBE = ["-x", "0", "A", "B_", "Z", "_x", "a", "a!", "a-b", "a.b", "a_b", "b", "z", "é"]
_BYTE_ORDER: dict[tuple, bool] = {}


def orders_by_bytes() -> bool:
    """Whether the database sorts the package table's file names by their bytes (UTF-8), as a
    merge by byte order does (`formats.conda_members`): the file names' collation is the
    database's, which sorts these names so (a "C" or "C.UTF-8" one does; one of a language
    does not). Asked once per database a process uses."""
    if connection.vendor != "postgresql":
        return False
    database = (connection.settings_dict["HOST"], connection.settings_dict["NAME"])
    if database not in _BYTE_ORDER:
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT (SELECT a.attcollation = 100 FROM pg_attribute a "  # 100: "default"
                "WHERE a.attrelid = %s::regclass AND a.attname = 'filename'), "
                "(SELECT array_agg(x ORDER BY x) FROM unnest(%s::varchar[]) AS x)",
                [Package._meta.db_table, _ORDER_PROBE],
            )
            default, ordered = cursor.fetchone()
        _BYTE_ORDER[database] = bool(default) and ordered == sorted(_ORDER_PROBE, key=str.encode)
    return _BYTE_ORDER[database]


def told_in_a_row(mark: dict[str, Any]) -> int:
    """How many splices in a row a file's next splice is of those that trust what the table
    told (0: it checks), from the `mark` of its last render (whose "told" says the same of it;
    a mark without its snapshot is checked)."""
    told, snapshot = mark.get("told"), mark.get("snapshot")
    if not isinstance(snapshot, str) or not _SNAPSHOT.fullmatch(snapshot):
        return 0
    return told + 1 if isinstance(told, int) and 0 <= told < CHECK_EVERY - 1 else 0


#: A transaction id past every one: below it, every entry of the log.
_EVERY = (1 << 63) - 1


def forget_gone(channel: int, marks: dict[str, Any]) -> None:
    """Forget the rows gone from the channel's units before their files were rendered last
    (`marks`, by path, as the publish leaves them: a unit's file is "<unit>/<name>"), and all
    of those of units with no file marked: no splice reads them."""
    if connection.vendor != "postgresql":
        return
    units: dict[str, int] = {}
    for path, mark in marks.items():
        unit, xmin = path.rpartition("/")[0], mark.get("xmin")
        if isinstance(xmin, int):
            units[unit] = min(xmin, units.get(unit, xmin))
    with connection.cursor() as cursor:
        cursor.execute(
            "DELETE FROM psm_package_gone g WHERE g.channel_id = %s AND g.gone_xid < coalesce("
            "(SELECT m.xmin FROM unnest(%s::text[], %s::bigint[]) AS m(unit, xmin) "
            "WHERE m.unit = g.unit), %s)",
            [channel, list(units), list(units.values()), _EVERY],
        )


def forget_gone_everywhere(marks: list[dict[str, Any]]) -> int:
    """Forget the rows gone, from any channel (a TRUNCATE's entry included), before every file
    rendered (the `marks` of every channel) was; return how many."""
    if connection.vendor != "postgresql":
        return 0
    xmins = [mark["xmin"] for mark in marks if isinstance(mark.get("xmin"), int)]
    with connection.cursor() as cursor:
        cursor.execute(
            "DELETE FROM psm_package_gone WHERE gone_xid < %s",
            [min(xmins) if xmins else _EVERY],
        )
        return cursor.rowcount


def _pass(cursor, p: dict[str, str], sections: int, params: dict[str, Any]) -> list | None:
    """`changes_since`'s changed rows where a pass checks them, numbered in file name order,
    and a last row with each section's served rows and their members' bytes now; None if more
    than the limit changed."""
    table = Package._meta.db_table
    counts, sizes = (
        ", ".join(
            f"coalesce((SELECT {column} FROM grouped WHERE section = {i}), 0)"
            for i in range(sections)
        )
        for column in ("c", "s")
    )
    # One pass over the unit's rows, by as many processes as PostgreSQL gives it (the ids are
    # collected by `psm_collect_ids`, an `array_agg` that combines partial results): the
    # sections' totals now and the changed rows' ids; then the changed rows by id, numbered in
    # file name order (only those are sorted). A member's size counts its file name's JSON
    # string as the name and its quotes: a name that JSON escapes (none a conda record may
    # have, `safe_filename`) only makes the section's length differ, and the unit is then
    # rendered whole.
    sql = (
        "WITH grouped AS MATERIALIZED (SELECT r.section, count(*) FILTER (WHERE r.served) AS c, "
        "sum(r.size) FILTER (WHERE r.served) AS s, "
        "psm_collect_ids(r.id) FILTER (WHERE r.changed AND r.section IS NOT NULL) AS ids "
        f"FROM (SELECT p.id, {p['section']} AS section, {p['served']} AS served, "
        f"{p['changed']} AS changed, "
        "octet_length(p.filename) + 3 + octet_length(p.record) AS size "
        f"FROM {table} p WHERE p.channel_id = %(channel)s AND p.unit = %(unit)s) r "
        "GROUP BY r.section), "
        f"unit AS MATERIALIZED (SELECT ARRAY[{counts}] AS counts, ARRAY[{sizes}] AS sizes, "
        "ARRAY(SELECT unnest(ids) FROM grouped) AS ids), "
        "changed AS MATERIALIZED (SELECT row_number() OVER (ORDER BY p.filename) AS n, "
        f"p.filename, p.name, {p['section']} AS section, "
        f"CASE WHEN {p['served']} THEN {p['member']} END AS member "
        "FROM unit, unnest(CASE WHEN cardinality(unit.ids) <= %(limit)s THEN unit.ids END) "
        f"AS changed(id) JOIN {table} p ON p.id = changed.id) "
        "SELECT 0, c.n, c.section, c.filename, c.name, c.member, NULL::bigint[], "
        "NULL::numeric[], NULL::int FROM changed c "
        "UNION ALL SELECT 1, NULL, NULL, NULL, NULL, NULL, counts, sizes, "
        "coalesce(cardinality(ids), 0) FROM unit "
        "ORDER BY 1, 2"
    )
    # The sections hashed: sorting the rows to group them would cost more than the scan.
    cursor.execute("SET LOCAL enable_sort = off")
    cursor.execute(sql, params)
    rows = cursor.fetchall()
    return None if rows[-1][-1] > params["limit"] else rows


def _told(cursor, p: dict[str, str], section: str, params: dict[str, Any]) -> list | None:
    """`changes_since`'s changed rows where the table tells them, in the pass's shape: the rows
    written since the mark, and those deleted or moved away since that the old file may list
    (served then, or written since the mark); None if more than the limit, or if a TRUNCATE
    came since (it tells no row)."""
    gone, written = (_UNSEEN.format(row="t", column=c) for c in ("gone_xid", "written_xid"))
    cursor.execute(
        f"SELECT EXISTS (SELECT FROM psm_package_gone t WHERE t.channel_id IS NULL AND {gone})",
        params,
    )
    if cursor.fetchone()[0]:
        return None
    table = Package._meta.db_table
    cursor.execute("SET LOCAL work_mem = '64MB'")  # their members sorted in memory
    cursor.execute(
        # A file gone and back is its row's (unique in the unit: no other row has its name).
        "SELECT DISTINCT ON (t.filename) t.section, t.filename, t.name, t.member FROM ("
        f"SELECT 0 AS source, p.filename, p.name, {p['section']} AS section, "
        f"CASE WHEN {p['served']} THEN {p['member']} END AS member "
        f"FROM {table} p WHERE p.channel_id = %(channel)s AND p.unit = %(unit)s "
        f"AND {p['changed']} "
        f"UNION ALL SELECT 1, t.filename, t.name, {section}, NULL "
        "FROM psm_package_gone t WHERE t.channel_id = %(channel)s AND t.unit = %(unit)s "
        f"AND {gone} AND (t.served OR {written})) t "
        "WHERE t.section IS NOT NULL ORDER BY t.filename, t.source LIMIT %(limit)s + 1",
        params,
    )
    rows = cursor.fetchall()
    if len(rows) > params["limit"]:
        return None
    return [(0, n, *row) for n, row in enumerate(rows, 1)]


#: Changed rows from which a publish probes their neighbours on two connections at once (the
#: probes of 12,000 rows took 0.45-0.56 s on one, 0.32-0.35 s on two).
PROBE_SPLIT = 2000


def _neighbours(cursor, sql: str, params: dict[str, Any], rows: list[tuple[str, int]]) -> list:
    """The neighbours (`changes_since`'s probes: whether changed and the member, before and
    after) of each of `rows` (file name, section), in order. Many rows are probed half here,
    half on a connection of their own that shares the snapshot (half here too if it fails)."""
    half = len(rows) // 2 if len(rows) >= PROBE_SPLIT else len(rows)
    later = None
    if half < len(rows):
        cursor.execute("SELECT pg_export_snapshot()")
        snapshot = cursor.fetchone()[0]
        later = on_own_connection(
            lambda: _probed_in(snapshot, sql, params, rows[half:]),
            "psm-probes",
            else_here=lambda: _probed(cursor, sql, params, rows[half:]),  # the same snapshot
        )
    found = _probed(cursor, sql, params, rows[:half])
    return found + later() if later is not None else found


def _probed_in(snapshot: str, sql: str, params: dict[str, Any], rows: list) -> list:
    """`_probed` on this thread's connection, in the snapshot `pg_export_snapshot` named."""
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        cursor.execute("SET TRANSACTION SNAPSHOT %s", [snapshot])
        cursor.execute("SET LOCAL jit = off")
        return _probed(cursor, sql, params, rows)


def _probed(cursor, sql: str, params: dict[str, Any], rows: list[tuple[str, int]]) -> list:
    """The probes' answers for `rows` (file name, section), in their order."""
    if not rows:
        return []
    filenames, sections = (list(column) for column in zip(*rows, strict=True))
    cursor.execute(sql, {**params, "filenames": filenames, "sections": sections})
    found = {i: near for i, *near in cursor.fetchall()}
    return [found[i] for i in range(1, len(rows) + 1)]


def _gaps(rows: list[tuple]) -> list[Gap]:
    """The gaps of a section's changed rows, in file name order: each row's member (None:
    not served now), then whether its neighbour before is changed and its member if not, and
    the same of its neighbour after; a neighbour that is itself changed hands on its own
    neighbour that way."""
    before: list[bytes | None] = []
    for i, (_, changed, member, _, _) in enumerate(rows):
        before.append(before[i - 1] if changed else member and member.encode())
    after: list[bytes | None] = [None] * len(rows)
    for i in range(len(rows) - 1, -1, -1):
        _, _, _, changed, member = rows[i]
        after[i] = after[i + 1] if changed else member and member.encode()
    gaps: list[Gap] = []
    for row, first, last in zip(rows, before, after, strict=True):
        if not gaps or (gaps[-1].before, gaps[-1].after) != (first, last):
            gaps.append(Gap(first, last, []))
        if row[0] is not None:
            gaps[-1].members.append(row[0].encode())
    return gaps


def _like_escaped(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
