"""Content-addressed package files over Django's storage API.

A file is stored once under `blobs/<sha256>`, whichever channels list it. Bytes are hashed while
they are written to a temporary file, checked against what upstream promised, and only then moved
into place, so a half-written or unverified file is never published.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Iterable

from django.core.files import File
from django.core.files.storage import default_storage

from .models import Artifact


class IntegrityError(Exception):
    """The bytes do not match the expected checksum or size."""


def store(
    chunks: Iterable[bytes],
    *,
    sha256: str | None = None,
    md5: str | None = None,
    size: int | None = None,
    max_bytes: int | None = None,
) -> Artifact:
    """Write the chunks to storage if they match the expected digests; return their Artifact."""
    sha, md5sum, total = hashlib.sha256(), hashlib.md5(), 0
    with tempfile.NamedTemporaryFile(dir=_tmp_dir(), delete=False) as tmp:
        try:
            for chunk in chunks:
                total += len(chunk)
                limit = max_bytes if max_bytes is not None else size
                if limit is not None and total > limit:
                    raise IntegrityError(f"more than the expected {limit} bytes")
                sha.update(chunk)
                md5sum.update(chunk)
                tmp.write(chunk)
            tmp.flush()
            digest = sha.hexdigest()
            if size is not None and total != size:
                raise IntegrityError(f"size {total} does not match the expected {size}")
            if sha256 and digest != sha256.lower():
                raise IntegrityError(f"sha256 {digest} does not match the expected {sha256}")
            if md5 and md5sum.hexdigest() != md5.lower():
                raise IntegrityError(f"md5 {md5sum.hexdigest()} does not match the expected {md5}")
            artifact = Artifact(sha256=digest, size=total)
            if not default_storage.exists(artifact.storage_path):
                with open(tmp.name, "rb") as source:
                    default_storage.save(artifact.storage_path, _VerifiedFile(source))
        finally:
            if os.path.exists(tmp.name):  # local storage moved it into place
                os.unlink(tmp.name)
    artifact, _ = Artifact.objects.get_or_create(sha256=digest, defaults={"size": total})
    return artifact


class _VerifiedFile(File):
    """A finished temporary file; local storage renames it into place (atomic) instead of
    copying, so readers never see a partial file."""

    def temporary_file_path(self) -> str:
        return self.file.name


def open_artifact(artifact: Artifact):
    """Open a stored file for reading."""
    return default_storage.open(artifact.storage_path, "rb")


def _tmp_dir() -> str | None:
    # Same file system as local storage, so the final move is cheap; None = system temp dir.
    location = getattr(default_storage, "location", None)
    if location:
        path = os.path.join(location, "tmp")
        os.makedirs(path, exist_ok=True)
        return path
    return None
