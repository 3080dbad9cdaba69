"""The fingerprints a read leaves beside a subdir document are used only for that very file."""

from __future__ import annotations

import os
import shutil

from channels_app.formats import conda_fingerprints


def _document(tmp_path, body: bytes = b'{"packages": {}}'):
    path = tmp_path / "linux-64.json"
    path.write_bytes(body)
    return str(path)


def test_fingerprints_saved_beside_a_document_are_read_back(tmp_path):
    document = _document(tmp_path)
    entries = conda_fingerprints.of({"a-1.0-0.tar.bz2": b'{"name": "a"}'})
    conda_fingerprints.save(document, "packages", "https://files.example/", entries)
    assert conda_fingerprints.load(document, "packages") == ("https://files.example/", entries)
    assert conda_fingerprints.load(document, "packages.conda") is None  # none left for it


def test_a_base_that_is_not_text_is_kept_as_none(tmp_path):
    document = _document(tmp_path)
    conda_fingerprints.save(document, "packages", 7, {})
    assert conda_fingerprints.load(document, "packages") == (None, {})


def test_fingerprints_of_another_file_are_not_used(tmp_path):
    document = _document(tmp_path)
    conda_fingerprints.save(document, "packages", None, {"a": 1})
    copy = str(tmp_path / "copy.json")
    shutil.copyfile(document, copy)
    shutil.copyfile(document + conda_fingerprints.suffix("packages"), copy + ".packages.fp")
    assert conda_fingerprints.load(copy, "packages") is None  # another inode

    status = os.stat(document)
    os.utime(document, ns=(status.st_atime_ns, status.st_mtime_ns + 1))
    assert conda_fingerprints.load(document, "packages") is None  # written since

    conda_fingerprints.save(document, "packages", None, {"a": 1})
    with open(document, "ab") as handle:
        handle.write(b" ")
    os.utime(document, ns=(status.st_atime_ns, status.st_mtime_ns + 1))
    assert conda_fingerprints.load(document, "packages") is None  # another size


def test_damaged_fingerprints_are_not_used(tmp_path):
    document = _document(tmp_path)
    conda_fingerprints.save(document, "packages", None, {"a": 1})
    saved = tmp_path / "linux-64.json.packages.fp"
    saved.write_bytes(saved.read_bytes()[:-3])
    assert conda_fingerprints.load(document, "packages") is None
    saved.write_bytes(b"\x93\x01")
    assert conda_fingerprints.load(document, "packages") is None


def test_fingerprints_that_cannot_be_written_leave_nothing_behind(tmp_path):
    missing = str(tmp_path / "gone" / "linux-64.json")
    conda_fingerprints.save(missing, "packages", None, {"a": 1})  # no error
    assert not (tmp_path / "gone").exists()
    document = _document(tmp_path)
    os.mkdir(document + ".packages.fp")  # a directory where the file would go
    conda_fingerprints.save(document, "packages", None, {"a": 1})
    assert sorted(os.listdir(tmp_path)) == ["linux-64.json", "linux-64.json.packages.fp"]
