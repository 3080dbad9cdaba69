"""A compressed index is decompressed while it downloads (`channels_app/formats/unpacking.py`),
with the same checks as a whole file: over a real HTTP server on loopback that sends the
body in two parts."""

from __future__ import annotations

import bz2
import random
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import zstandard

from channels_app.formats import FORMATS, FormatError
from psm.http import UpstreamClient

conda = FORMATS["conda"]
#: 6 MB that compress to about half (random hex): each half of it a frame of more than the
#: 1 MiB chunks a download hands on.
PAD = random.Random(0).randbytes(3_000_000).hex().encode()
DOCUMENT = b'{"info": {"subdir": "linux-64"}, "packages": {}, "pad": "' + PAD + b'"}'


class Upstream:
    """Serves `linux-64/repodata.json.<suffix>` as `first`, then (with `hold`, once `release`
    is set, or after 10 s) `rest`; notes whether `release` came before the rest was sent, and
    whether the client hung up before the end (`cut_off`)."""

    def __init__(self, suffix: str, first: bytes, rest: bytes, *, hold: bool = False) -> None:
        self.release, self.released_early, self.cut_off = threading.Event(), None, False
        if not hold:
            self.release.set()
        upstream = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def do_GET(self) -> None:
                if self.path != f"/linux-64/repodata.json.{suffix}":
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(first) + len(rest)))
                self.end_headers()
                self.wfile.write(first)
                self.wfile.flush()
                upstream.released_early = upstream.release.wait(10)
                try:
                    self.wfile.write(rest)
                except OSError:
                    upstream.cut_off = True

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.handle_error = lambda *args: None  # a client that hung up: `cut_off`
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self) -> Upstream:
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


class Watched:
    """The document's file; sets `written` at the first decompressed bytes."""

    def __init__(self, path, written: threading.Event) -> None:
        self.file, self.written = open(path, "w+b"), written  # noqa: SIM115 - closed below

    def write(self, data: bytes) -> int:
        self.written.set()
        return self.file.write(data)

    def seek(self, offset: int, whence: int = 0) -> int:
        return self.file.seek(offset, whence)

    def read(self) -> bytes:
        return self.file.read()


@pytest.fixture
def client():
    client = UpstreamClient()
    yield client
    client.close()


def _frames(document: bytes) -> tuple[bytes, bytes]:
    """The document as two zstd frames (a valid `.zst`: frames decompress one after another)."""
    compressor = zstandard.ZstdCompressor(level=1)
    half = len(document) // 2
    return compressor.compress(document[:half]), compressor.compress(document[half:])


def test_a_zst_index_is_decompressed_before_its_last_byte_arrives(tmp_path, client):
    first, rest = _frames(DOCUMENT)
    with Upstream("zst", first, rest, hold=True) as upstream:
        dest = Watched(tmp_path / "index", upstream.release)
        fetched = conda.fetch_unit(client, upstream.url, "linux-64", dest, {})
        assert upstream.released_early  # the first frame was decompressed meanwhile
    assert fetched.status == "changed" and fetched.url.endswith("repodata.json.zst")
    dest.seek(0)
    assert dest.read() == DOCUMENT


@pytest.mark.parametrize(
    ("suffix", "whole"),
    [
        ("zst", b"".join(_frames(DOCUMENT))),
        ("zst", zstandard.ZstdCompressor(write_checksum=True).compress(DOCUMENT)),
        ("bz2", bz2.compress(DOCUMENT)),
    ],
    ids=["zst", "zst with a checksum", "bz2"],
)
@pytest.mark.parametrize("keep", [4, 1000, "half", "all but one"])
def test_a_stream_that_ends_inside_a_frame_fails_and_says_so(tmp_path, client, suffix, whole, keep):
    """Whatever the cut (inside the first frame's header, at a block, one byte short): the
    document is never the part that arrived."""
    cut = {"half": len(whole) // 2, "all but one": len(whole) - 1}.get(keep, keep)
    with Upstream(suffix, whole[:cut], b"") as upstream:
        with open(tmp_path / "index", "w+b") as dest, pytest.raises(FormatError, match="corrupt"):
            conda.fetch_unit(client, upstream.url, "linux-64", dest, {})


def test_a_corrupt_stream_stops_the_download_before_its_end(tmp_path, client):
    garbage = b"\x28\xb5\x2f\xfd" + b"\xff" * 100  # a zstd magic number, then nonsense
    with Upstream("zst", garbage, b"\0" * 200_000_000) as upstream:
        with open(tmp_path / "index", "w+b") as dest, pytest.raises(FormatError, match="corrupt"):
            conda.fetch_unit(client, upstream.url, "linux-64", dest, {})
    assert upstream.cut_off  # the 200 MB after the garbage were not all read


def test_a_bomb_is_refused_as_it_decompresses(tmp_path, client):
    client.max_bytes = 1_000_000  # of the download, and of what it decompresses to
    first, rest = _frames(b"[" + b"0," * 10_000_000 + b"0]")  # 20 MB in a few KB
    with Upstream("zst", first, rest) as upstream:
        with open(tmp_path / "index", "w+b") as dest, pytest.raises(FormatError, match="limit"):
            conda.fetch_unit(client, upstream.url, "linux-64", dest, {})
