from __future__ import annotations

import hashlib
import os
import time
from datetime import timedelta

import pytest
from django.core.files.storage import default_storage

from channels_app import storage
from channels_app.models import Artifact
from channels_app.publishing import collect_garbage


@pytest.fixture(autouse=True)
def _media(settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path / "files"
    settings.STORAGES = {
        **settings.STORAGES,
        "default": {
            "BACKEND": "django.core.files.storage.FileSystemStorage",
            "OPTIONS": {"location": str(tmp_path / "files")},
        },
    }


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.mark.django_db
def test_store_verifies_and_addresses_by_sha256():
    data = b"package bytes" * 1000
    artifact = storage.store([data[:100], data[100:]], sha256=_sha(data), size=len(data))
    assert artifact.sha256 == _sha(data)
    assert artifact.size == len(data)
    assert artifact.storage_path.endswith(_sha(data))
    with storage.open_artifact(artifact) as handle:
        assert handle.read() == data


@pytest.mark.django_db
def test_the_same_bytes_are_stored_once():
    first = storage.store([b"same"], sha256=_sha(b"same"))
    second = storage.store([b"same"])
    assert first.pk == second.pk
    assert Artifact.objects.count() == 1
    folder = default_storage.path(first.storage_path).rsplit("/", 1)[0]
    assert len(default_storage.listdir(folder)[1]) == 1


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("expected", "message"),
    [
        ({"sha256": "0" * 64}, "sha256"),
        ({"md5": "0" * 32}, "md5"),
        ({"size": 3}, "expected 3 bytes"),
        ({"size": 100}, "size 4 does not match"),
        ({"max_bytes": 2}, "more than"),
    ],
)
def test_mismatching_bytes_are_refused_and_leave_nothing(expected, message):
    with pytest.raises(storage.IntegrityError, match=message):
        storage.store([b"data"], **expected)
    assert Artifact.objects.count() == 0
    assert not default_storage.exists(f"blobs/{_sha(b'data')[:2]}")
    assert default_storage.listdir("tmp")[1] == []


@pytest.mark.django_db
def test_garbage_collection_removes_what_killed_downloads_left_behind(settings, tmp_path):
    """A worker killed mid-download leaves its temporary file (and a web worker its passive
    partial file): collected once nothing wrote to them for the grace period."""
    settings.DATA_DIR = tmp_path / "data"
    old, fresh = time.time() - 7200, time.time()
    files = {
        os.path.join(storage.tmp_dir(), "tmpkilled"): old,
        os.path.join(storage.tmp_dir(), "tmpwriting"): fresh,
        os.path.join(storage.locks_dir(), "package-1.part"): old,
        os.path.join(storage.locks_dir(), "package-2.part"): fresh,
        os.path.join(storage.locks_dir(), "package-1.lock"): old,  # locks stay
    }
    for path, mtime in files.items():
        with open(path, "wb") as out:
            out.write(b"x")
        os.utime(path, (mtime, mtime))

    collect_garbage(older_than=timedelta(hours=1))

    left = {os.path.basename(path) for path in files if os.path.exists(path)}
    assert left == {"tmpwriting", "package-2.part", "package-1.lock"}
