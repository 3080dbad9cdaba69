"""What a run keeps for the next one, so that it asks upstream only about what changed.

Each unit read to the end keeps its validators (ETag, Last-Modified) and the serial the
listing gave it (`MirrorUnit`); the listing documents keep theirs in
`Mirror.listing_validators`, valid only while the units kept are that listing's.

A format whose units are large documents of which few entries change between reads (conda's
subdirs) also keeps each unit's last document, read to the end, in the data folder
(`mirror-state/<mirror>/<unit>.json`, a hard link to the fetched file, and beside it the
companions the format left with it: conda's fingerprints of its entries), with a stamp of the
mirror's live rows of the unit once written: the next read compares its entries' raw bytes
with it (no digest of each entry, no stored digests read) while the rows still match it. The
stamp also names the upstream document the rows are (its hash, `nominal`) and where that
document said its files live (`base_url`): a unit read from a patch to it (conda's
repodata.jlap) keeps that stamp without a document.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import secrets
import shutil
import threading
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import BinaryIO, NamedTuple

import orjson
from django.conf import settings
from django.db import IntegrityError, connection, transaction

from channels_app.models import Package
from psm.own_connection import on_own_connection

from ..models import Mirror, MirrorUnit


class UnitState(NamedTuple):
    """What the last run that read a unit to the end kept of it."""

    validators: dict
    serial: int | None


def _documents_key(mirror: Mirror, units: int) -> str:
    """What kept listing documents stand for: the mirror's options (a CRAN package list makes
    another listing of the same PACKAGES) and how many units that listing has."""
    options = orjson.dumps([mirror.options, units], option=orjson.OPT_SORT_KEYS)
    return hashlib.blake2b(options, digest_size=8).hexdigest()


def kept_documents(mirror: Mirror, units: int) -> dict:
    """The validators of the source's listing documents (see `RepositoryFormat.list_units`)
    kept by the last run that read every unit, if it had the same options and its units are
    still the `units` kept (none was forgotten since)."""
    kept = mirror.listing_validators
    if kept.get("key") != _documents_key(mirror, units):
        return {}
    return dict(kept.get("documents") or {})


def keep_documents(mirror: Mirror, documents: dict, stale: list[str], units: int) -> None:
    """Keep the listing documents' validators for the next run, and with them only the units
    of that listing (`units` of them): a 304 lists the units kept."""
    kept: dict = {}
    if documents:
        for start in range(0, len(stale), 1000):
            MirrorUnit.objects.filter(mirror=mirror, name__in=stale[start : start + 1000]).delete()
        kept = {"key": _documents_key(mirror, units), "documents": documents}
    if kept != mirror.listing_validators:
        mirror.listing_validators = kept
        Mirror.objects.filter(pk=mirror.pk).update(listing_validators=kept)


def unit_states(units_read, todo: list, serials: dict) -> list:
    """(unit, UnitState or None, serial) for the units to fetch: the validators of those read
    before, loaded for these units only."""
    validators: dict[str, dict] = {}
    before = [unit for unit, _ in todo if unit in serials]
    for start in range(0, len(before), 1000):
        chunk = before[start : start + 1000]
        validators.update(units_read.filter(name__in=chunk).values_list("name", "validators"))
    return [
        (unit, UnitState(validators[unit], serials[unit]) if unit in validators else None, serial)
        for unit, serial in todo
    ]


def save_units(done: list[MirrorUnit]) -> None:
    """Keep the units read to the end (`done`, emptied) for the next run to ask about."""
    if not done:
        return
    if not Mirror.objects.filter(pk=done[0].mirror_id).exists():
        done.clear()  # the mirror was deleted meanwhile: nothing to resume
        return
    try:
        with transaction.atomic():
            MirrorUnit.objects.bulk_create(
                done,
                update_conflicts=True,
                unique_fields=["mirror", "name"],
                update_fields=["validators", "serial", "read_at"],
            )
    except IntegrityError:
        pass  # the mirror was deleted meanwhile: nothing to resume
    done.clear()


# --- The last index document of a unit, kept to compare the next one with ---------------------


class KeptDocument(NamedTuple):
    """A unit's index document kept by the last run that read it to the end (`path`, None if
    that run read a patch), and what the mirror's live rows of the unit were then: how many,
    and the sum of their digests; the hash of the upstream document they are (`nominal`, if
    known) and where it said its files live (`base_url`, None: beside it)."""

    path: str | None
    rows: int
    digests: int
    folder: str  # `_url_key` of where it was read
    nominal: str | None = None
    base_url: str | None = None

    def read_from(self, url: str) -> bool:
        """Whether a document at `url` lists files where this one did (its rows' locations)."""
        return self.folder == _url_key(url)


#: A unit name that can be a file name as it is (conda subdirs are).
_FILE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")


def _state_root() -> Path:
    return Path(settings.DATA_DIR) / "mirror-state"


def _folder(mirror_id: int) -> Path:
    return _state_root() / str(mirror_id)


def document_kept(
    mirror_id: int, unit: str, live_rows: Callable[[], tuple[int, int]] | None = None
) -> KeptDocument | None:
    """The unit's kept document, if the mirror's live rows of the unit are still exactly
    those it gave (their number and digests: one scan of the unit's rows, no row read into
    Python; `live_rows`: asked already, see `live_rows_meanwhile`); None otherwise. Compare
    only a document `read_from` the same place."""
    files = _kept_files(mirror_id, unit)
    if files is None:
        return None
    stamp_file, path = files
    try:
        stamp = orjson.loads(stamp_file.read_bytes())
    except (OSError, orjson.JSONDecodeError):
        return None
    if not isinstance(stamp, dict):
        return None
    document = str(path) if stamp.get("document", True) and path.is_file() else None
    nominal, base = stamp.get("nominal"), stamp.get("base_url")
    try:
        kept = KeptDocument(
            document,
            int(stamp["rows"]),
            int(stamp["digests"]),
            str(stamp["url"]),
            nominal if isinstance(nominal, str) else None,
            base if isinstance(base, str) else None,
        )
    except (KeyError, TypeError, ValueError):
        return None
    if kept.path is None and kept.nominal is None:
        return None  # nothing to compare with
    live = live_rows() if live_rows is not None else _live_rows(mirror_id, unit)
    return kept if live == (kept.rows, kept.digests) else None


def live_rows_meanwhile(mirror_id: int, unit: str) -> Callable[[], tuple[int, int]]:
    """The unit's live rows (what `document_kept` checks), asked now on a connection of its
    own, as its document downloads (the scan of a conda-forge subdir's rows: 0.07-0.15 s);
    the callable returns them. Only for rows no transaction is writing: the caller's uncommitted
    rows are not seen."""
    ask = partial(_live_rows, mirror_id, unit)
    return on_own_connection(ask, "psm-live-rows", else_here=ask)


def document_path(mirror_id: int, unit: str) -> str | None:
    """Where the unit's kept document is, if there is one; whether the rows still match it
    is `document_kept`'s to say (this asks no database)."""
    files = _kept_files(mirror_id, unit)
    if files is None:
        return None
    stamp, path = files
    return str(path) if stamp.is_file() and path.is_file() else None


def _kept_files(mirror_id: int, unit: str) -> tuple[Path, Path] | None:
    """The unit's stamp and kept document (which may not exist); None for a unit whose name
    cannot be a file's."""
    if not _FILE_NAME.fullmatch(unit):
        return None
    folder = _folder(mirror_id)
    return folder / f"{unit}.stamp", folder / f"{unit}.json"


def _url_key(url: str) -> str:
    """What a stamp keeps of the document's URL: the digest (the URL may hold a token) of its
    folder, where the files its entries name live (`.zst` or plain, the same document)."""
    folder = url.split("?", 1)[0].rsplit("/", 1)[0]
    return hashlib.blake2b(folder.encode(), digest_size=16).hexdigest()


def _live_rows(mirror_id: int, unit: str) -> tuple[int, int]:
    table = Package._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute(
            # The digests summed in two halves: a sum of 64-bit values overflows SQLite's
            # integers (PostgreSQL's is exact either way). x == x / 2**32 * 2**32 + x % 2**32
            # for the truncating division and remainder of both (`%%`: `%` escaped).
            f"SELECT count(*), coalesce(sum(entry_digest / {_HALF}), 0), "
            f"coalesce(sum(entry_digest %% {_HALF}), 0) FROM {table} "
            "WHERE mirror_id = %s AND unit = %s AND NOT removed",
            [mirror_id, unit],
        )
        rows, high, low = cursor.fetchone()
    return int(rows), int(high) * _HALF + int(low)


_HALF = 2**32


def forget_document(mirror_id: int, unit: str) -> None:
    """No kept document for the unit any more (its rows are about to change): its stamp goes,
    and a held one (`hold_document`); the document itself stays for a read under way to
    compare with, until the next one kept replaces it."""
    if not _FILE_NAME.fullmatch(unit):
        return
    folder = _folder(mirror_id)
    with contextlib.suppress(FileNotFoundError):
        (folder / f"{unit}.stamp").unlink()
    with contextlib.suppress(OSError):  # no folder
        _drop_pending(folder, unit)


def hold_document(mirror_id: int, unit: str, fileobj: BinaryIO) -> bool:
    """Link (or copy) the unit's document just read, as it is, to be kept once its rows are
    written (`keep_document`), with its companions (files the format left beside it, named
    after it: `<name><suffix>` for each suffix in `fileobj.companions`); False if the
    document cannot be."""
    name = getattr(fileobj, "name", None)
    if not _FILE_NAME.fullmatch(unit) or not isinstance(name, str):
        return False
    folder = _folder(mirror_id)
    pending = folder / f"{unit}.pending"
    try:
        fileobj.flush()
        folder.mkdir(parents=True, exist_ok=True)
        _drop_pending(folder, unit)
        _link(name, pending)
    except OSError:
        return False
    for suffix in getattr(fileobj, "companions", ()):
        with contextlib.suppress(OSError):  # a companion only saves work
            _link(name + suffix, Path(f"{pending}{suffix}"))
    return True


def _link(source: str, target: Path) -> None:
    try:
        os.link(source, target)  # the fetched temporary file, no copy
    except OSError:  # another file system
        shutil.copyfile(source, target)


def _drop_pending(folder: Path, unit: str) -> None:
    """No held document (nor companions of one) for the unit any more."""
    for path in [folder / f"{unit}.pending", *folder.glob(f"{unit}.pending.*")]:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


class Held(NamedTuple):
    """What a unit read to the end keeps once its rows are written (`keep_document`): the URL
    it was read from, its live rows (how many, their digests' sum), the hash of the upstream
    document they are, where that document said its files live, and whether its document was
    held (`hold_document`; not for a unit read from a patch)."""

    url: str
    rows: int
    digests: int
    nominal: str | None
    base_url: str | None
    document: bool


def keep_document(mirror_id: int, unit: str, held: Held) -> None:
    """Keep the held document as the unit's (or none, for a unit read from a patch: the one
    kept no longer is what the rows are), with what its rows are now (`document_kept`); the
    stamp goes last, so a document without it is never used."""
    folder = _folder(mirror_id)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        _discard([folder / f"{unit}.json", *folder.glob(f"{unit}.json.*")])  # the last one's
        if held.document:
            for companion in folder.glob(f"{unit}.pending.*"):
                suffix = companion.name[len(f"{unit}.pending") :]
                os.replace(companion, folder / f"{unit}.json{suffix}")
            os.replace(folder / f"{unit}.pending", folder / f"{unit}.json")
        stamp = folder / f"{unit}.stamp.tmp"
        # The digests' sum is past 64 bits: kept as text.
        stamp.write_bytes(
            orjson.dumps(
                {
                    "url": _url_key(held.url),
                    "rows": held.rows,
                    "digests": str(held.digests),
                    "nominal": held.nominal,
                    "base_url": held.base_url,
                    "document": held.document,
                }
            )
        )
        os.replace(stamp, folder / f"{unit}.stamp")
    except OSError:
        forget_document(mirror_id, unit)


def _discard(paths: list[Path]) -> None:
    """Delete these files (those that exist) in a thread of their own, once moved aside here:
    freeing a kept document (hundreds of MB, mostly in the page cache) takes 50-90 ms that
    the run need not wait for. What a process ended meanwhile left aside goes with the next."""
    aside = _state_root() / ".discarded"
    moved = False
    for path in paths:
        try:
            aside.mkdir(parents=True, exist_ok=True)
            os.replace(path, aside / f"{path.name}.{secrets.token_hex(8)}")
        except FileNotFoundError:
            continue
        except OSError:  # cannot be moved aside: deleted here
            with contextlib.suppress(OSError):
                path.unlink()
            continue
        moved = True
    if moved:
        threading.Thread(target=_empty, args=(aside,), name="psm-discard", daemon=True).start()


def _empty(folder: Path) -> None:
    with contextlib.suppress(OSError):
        for path in folder.iterdir():
            with contextlib.suppress(OSError):
                path.unlink()


def forget_mirror_documents(mirror_id: int) -> None:
    """Drop every document kept for the mirror (it is deleted)."""
    shutil.rmtree(_folder(mirror_id), ignore_errors=True)
