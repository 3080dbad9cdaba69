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


def test_put_bytes_stores_a_small_file_once_readable_by_all(tmp_path):
    data = b"<html>a project page</html>"
    assert storage.put_bytes(data) == (_sha(data), len(data))
    path = default_storage.path(storage.blob_path(_sha(data)))
    with open(path, "rb") as stored:
        assert stored.read() == data
    assert os.stat(path).st_mode & 0o777 == 0o644  # as Django stores files, not mkstemp's
    os.utime(path, (1, 1))
    assert storage.put_bytes(data) == (_sha(data), len(data))
    assert os.stat(path).st_mtime == 1  # already stored: not written again
    assert os.listdir(storage.tmp_dir()) == []


def test_put_bytes_makes_a_removed_folder_again():
    first = b"first"
    storage.put_bytes(first)
    folder = os.path.dirname(default_storage.path(storage.blob_path(_sha(first))))
    os.unlink(os.path.join(folder, _sha(first)))
    os.rmdir(folder)
    storage.put_bytes(first)
    assert default_storage.exists(storage.blob_path(_sha(first)))


def test_put_bytes_goes_through_django_on_other_storages(settings):
    settings.STORAGES = {
        **settings.STORAGES,
        "default": {"BACKEND": "django.core.files.storage.InMemoryStorage"},
    }
    data = b"a page in memory"
    assert storage.put_bytes(data) == (_sha(data), len(data))
    assert storage.put_bytes(data) == (_sha(data), len(data))
    with default_storage.open(storage.blob_path(_sha(data))) as stored:
        assert stored.read() == data


@pytest.mark.parametrize("size", [10, storage.SMALL_BLOB, storage.SMALL_BLOB + 1, 3_000_000])
def test_a_buffered_writer_stores_small_and_large_files_alike(size):
    data = os.urandom(size)
    with storage.BufferedBlobWriter() as writer:
        for start in range(0, size, 300_000):
            writer.write(data[start : start + 300_000])
        assert writer.commit() == (_sha(data), size)
    with default_storage.open(storage.blob_path(_sha(data))) as stored:
        assert stored.read() == data
    assert os.listdir(storage.tmp_dir()) == []


def test_a_buffered_writer_left_without_commit_stores_nothing():
    with pytest.raises(RuntimeError), storage.BufferedBlobWriter() as writer:
        writer.write(b"x" * (storage.SMALL_BLOB + 10))
        raise RuntimeError("the render failed")
    assert not default_storage.exists(storage.blob_path(_sha(b"x" * (storage.SMALL_BLOB + 10))))
    assert os.listdir(storage.tmp_dir()) == []
