"""Benchmark a passive mirror's first request of a big file against downloading it directly.

    PYTHONPATH=. .venv/bin/python benchmarks/bench_first_request.py [--sizes 20,200]
        [--repeat 5] [--workdir /tmp/psm-bench-first] [--pg postgres://postgres@127.0.0.1:5432]
        [--db psm_bench_first] [--worker-class psm-server] [--workers 2] [--threads 4]
        [--proxpi PATH] [--baseline CHECKOUT] [--rate MB_PER_S] [--json FILE]

What it does, in order:

1. Data: random files of each `--sizes` (MB) as conda packages `bench<MB>-1.0-0.conda` under
   `<workdir>/chan/noarch`, with a `repodata.json` giving their sha256, md5 and size, and a
   PEP 503 page `simple/bench/index.html` linking them (for `--proxpi`).
2. Upstream: a threaded HTTP server on 127.0.0.1 that sends files with `sendfile` and a
   precomputed ETag, no throttling: the fastest a Python upstream gets (bench_conda's). With
   `--rate`, every body is paced to that many MB/s: a network link's bandwidth (loopback runs
   at several GB/s, faster than sha256 on one core, which no first request can outrun).
3. PSM: a fresh `--db`, migrated, with a conda channel `bench` and a passive mirror of noarch
   synced from the upstream (`manage.py mirror_run`), served by the production server
   (`psm.server`; or gunicorn with `--worker-class gthread` etc.), `--workers` processes of
   `--threads` threads, on the same 2 cores.
4. Each repetition, for each size, one after the other: the direct download from upstream, the
   PSM first request (its file, artifact row and partial file removed just before: a fresh
   cache), and the PSM second request (served from storage); with `--proxpi`, proxpi's first
   request (its cache emptied) and second request through its simple index.

With `--baseline`, a second PSM runs the code of another checkout (its own database
`<db>_baseline` and data folder) beside this one, and each repetition measures both right after
the same direct download, taking turns at going first: a before/after pair on a machine whose
load changes from minute to minute.

The client is curl (`-o` a file; its `time_total`, and `time_starttransfer` for the first byte);
every body is checked against the file's sha256, untimed. The figures are medians over
`--repeat`; the ratios are to the direct download of the same repetitions (of the medians, and
the median and best of each repetition's own ratio). CPU seconds per request (user + system,
in clock ticks, so means) are read for curl, for this process (the upstream's threads) and for
PSM's server processes. Prints a table and writes JSON (`<workdir>/results.json` unless
`--json`). Nothing is asserted.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import threading
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.bench_conda import (  # noqa: E402
    free_port,
    fresh_database,
    git_describe,
    psm_env,
    send_file,
    wait_http,
)
from psm.server import command as server_command  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
MB = 1_000_000

SETUP = """
from channels_app.models import Channel
from mirrors_app.models import Mirror
channel = Channel.objects.create(name="bench", kind="conda")
Mirror.objects.create(channel=channel, name="bench", mode="passive", kind="conda",
                      source_url={url!r}, options={{"subdirs": ["noarch"]}})
"""


def make_files(chan: Path, sizes: list[int]) -> dict[str, dict]:
    """Random package files of `sizes` MB, their repodata.json and a PEP 503 page."""
    noarch = chan / "noarch"
    noarch.mkdir(parents=True, exist_ok=True)
    files: dict[str, dict] = {}
    for mb in sizes:
        name = f"bench{mb}-1.0-0.conda"
        sha256, md5 = hashlib.sha256(), hashlib.md5()
        with open(noarch / name, "wb") as out:
            for _ in range(mb):
                block = os.urandom(MB)
                sha256.update(block)
                md5.update(block)
                out.write(block)
        files[name] = {
            "mb": mb,
            "name": f"bench{mb}",
            "version": "1.0",
            "build": "0",
            "build_number": 0,
            "depends": [],
            "subdir": "noarch",
            "sha256": sha256.hexdigest(),
            "md5": md5.hexdigest(),
            "size": mb * MB,
        }
    repodata = {
        "info": {"subdir": "noarch"},
        "packages": {},
        "packages.conda": {
            name: {k: v for k, v in entry.items() if k != "mb"} for name, entry in files.items()
        },
        "repodata_version": 1,
    }
    (noarch / "repodata.json").write_text(json.dumps(repodata))
    # The same files as a Python project, for proxpi (a PyPI caching proxy).
    simple = chan / "simple" / "bench"
    simple.mkdir(parents=True, exist_ok=True)
    links = "".join(
        f'<a href="/noarch/{name}#sha256={entry["sha256"]}">{name}</a>\n'
        for name, entry in files.items()
    )
    (simple / "index.html").write_text(f"<html><body>\n{links}</body></html>\n")
    (chan / "simple" / "index.html").write_text('<a href="bench/">bench</a>\n')
    return files


def make_upstream(root: Path, rate: float | None = None) -> ThreadingHTTPServer:
    """Files under `root` sent with sendfile (a folder: its index.html), with a precomputed
    ETag: as fast as a Python upstream gets, and nothing hashed per request. With `rate`
    (bytes per second), each body is paced to it: a network link of that bandwidth."""

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args) -> None:  # quiet
            pass

        def do_GET(self) -> None:  # noqa: N802 - stdlib signature
            path = (root / self.path.split("?", 1)[0].lstrip("/")).resolve()
            if path.is_dir():
                path = path / "index.html"
            if root not in path.parents or not path.is_file():
                self.send_response(404)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            st = path.stat()
            self.send_response(200)
            kind = "text/html" if path.suffix == ".html" else "application/octet-stream"
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(st.st_size))
            self.send_header("ETag", f'"{st.st_size:x}-{st.st_mtime_ns:x}"')
            self.end_headers()
            with open(path, "rb") as handle:
                self.wfile.flush()
                send_file(self.connection, handle, 0, st.st_size, rate)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def curl(url: str, out: Path, server: int | None = None) -> dict:
    """GET `url` into `out` with curl; its timings in seconds, and the CPU seconds used by
    curl, by this process (the upstream's threads) and by the process tree of `server`."""
    before = _cpu(server)
    written = subprocess.run(
        ["curl", "-sS", "--fail", "-o", str(out), "-w", "%{time_total} %{time_starttransfer}"]
        + ["--max-time", "600", url],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    used = {key: round(value - before[key], 4) for key, value in _cpu(server).items()}
    return {"total": float(written[0]), "first_byte": float(written[1]), **used}


def _cpu(server: int | None) -> dict[str, float]:
    """CPU seconds (user + system) so far: finished children (curl), this process, and the
    process tree under `server` (read from /proc; 0 where there is none)."""
    children = os.times()
    tree = 0.0
    if server is not None:
        ticks = os.sysconf("SC_CLK_TCK")
        for pid in _tree(server):
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            tree += (int(fields[11]) + int(fields[12])) / ticks
    return {
        "cpu_curl": children.children_user + children.children_system,
        "cpu_bench": children.user + children.system,
        "cpu_server": tree,
    }


def _tree(root: int) -> list[int]:
    """`root` and its descendants."""
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        try:
            tasks = Path(f"/proc/{pid}/task").iterdir()
            for task in tasks:
                kids = (task / "children").read_text().split()
                todo.extend(int(kid) for kid in kids)
        except OSError:
            continue
    return found


def check_body(out: Path, entry: dict, what: str) -> None:
    digest = hashlib.sha256()
    with open(out, "rb") as handle:
        while block := handle.read(4 * MB):
            digest.update(block)
    if digest.hexdigest() != entry["sha256"]:
        size = out.stat().st_size
        raise SystemExit(f"{what}: the body received ({size} bytes) is not the upstream file")
    out.unlink()


def forget_files(dsn: str, data: Path, files: dict[str, dict]) -> None:
    """Undo the first request: no artifact on the packages, no blob, no partial file."""
    digests = [entry["sha256"] for entry in files.values()]
    with psycopg.connect(dsn) as conn:
        conn.execute(
            "UPDATE channels_app_package SET artifact_id = NULL WHERE sha256 = ANY(%s)", [digests]
        )
        conn.execute("DELETE FROM channels_app_artifact WHERE sha256 = ANY(%s)", [digests])
    for digest in digests:
        blob = data / "files" / "blobs" / digest[:2] / digest[2:4] / digest
        blob.unlink(missing_ok=True)
    for partial in (data / "locks").glob("*.part"):
        partial.unlink()
    subprocess.run(["sync"], check=False)  # the next request does not pay for our writeback


def setup_psm(root: Path, env: dict, upstream_url: str) -> None:
    """Migrate the database and sync the passive mirror with the code under `root`."""
    for args in (
        ("migrate", "--noinput"),
        ("shell", "-c", SETUP.format(url=upstream_url)),
        ("mirror_run", "bench"),
    ):
        subprocess.run(
            [PYTHON, str(root / "manage.py"), *args],
            env={**env, "PYTHONPATH": str(root)},
            cwd=root,
            check=True,
            capture_output=True,
        )


def start_psm(
    env: dict, workdir: Path, args: argparse.Namespace, root: Path = ROOT, log_name: str = "server"
) -> tuple:
    """PSM under the production server (`psm.server`), or gunicorn with `--worker-class`,
    running the code under `root`."""
    port = free_port()
    env = {**env, "PYTHONPATH": str(root)}
    log = open(workdir / f"{log_name}.log", "w")  # noqa: SIM115 - closed with the server
    if args.worker_class == "psm-server":
        command = server_command(f"127.0.0.1:{port}", workers=args.workers, threads=args.threads)
    else:
        command = [PYTHON, "-m", "gunicorn", "psm.wsgi", "-b", f"127.0.0.1:{port}"]
        command += ["--workers", str(args.workers), "--worker-class", args.worker_class]
        if args.worker_class == "gthread":
            command += ["--threads", str(args.threads)]
        command += ["--timeout", "600", "--log-level", "warning"]
    server = subprocess.Popen(command, env=env, cwd=root, stdout=log, stderr=subprocess.STDOUT)
    wait_http("127.0.0.1", port, "/api/repo/bench/noarch/repodata.json")
    return server, log, port


def start_proxpi(proxpi: Path, upstream_url: str, workdir: Path) -> tuple:
    port = free_port()
    cache = workdir / "proxpi-cache"
    env = {
        "PATH": os.environ.get("PATH", ""),
        "HOME": str(workdir),
        "PROXPI_INDEX_URL": f"{upstream_url}/simple/",
        "PROXPI_CACHE_DIR": str(cache),
        "PROXPI_CACHE_SIZE": str(10 * 2**30),
        "PROXPI_DOWNLOAD_TIMEOUT": "600",
    }
    log = open(workdir / "proxpi.log", "a")  # noqa: SIM115 - closed with the server
    server = subprocess.Popen(
        [str(proxpi / "bin" / "gunicorn"), "proxpi.server:app", "-b", f"127.0.0.1:{port}"]
        # One process: proxpi keeps its cache's index in memory, per process.
        + ["--workers", "1", "--worker-class", "gthread", "--threads", "8", "--timeout", "600"],
        env=env,
        cwd=workdir,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    wait_http("127.0.0.1", port, "/index/")
    return server, log, port, cache


def stop(server: subprocess.Popen, log) -> None:
    server.terminate()
    server.wait(30)
    log.close()


def median(values: list[float]) -> float:
    return round(statistics.median(values), 3)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", default="20,200", help="file sizes in MB, comma-separated")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/psm-bench-first"))
    parser.add_argument("--pg", default="postgres://postgres@127.0.0.1:5432", help="server URL")
    parser.add_argument("--db", default="psm_bench_first")
    parser.add_argument("--worker-class", default="psm-server", help="or a gunicorn class")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--proxpi", type=Path, help="a venv with proxpi and gunicorn installed")
    parser.add_argument("--json", type=Path)
    parser.add_argument(
        "--rate",
        type=float,
        help="the upstream's bandwidth in MB/s (a network link; default: unlimited loopback)",
    )
    parser.add_argument(
        "--baseline",
        type=Path,
        help="another checkout of PSM (e.g. `git worktree add /tmp/base main`) served beside "
        "this one (database <db>_baseline): each repetition measures both, in turn first",
    )
    args = parser.parse_args()
    sizes = [int(size) for size in args.sizes.split(",")]

    workdir: Path = args.workdir.resolve()
    chan, data = workdir / "chan", workdir / "data"
    for folder in (chan, data, workdir / "proxpi-cache"):
        shutil.rmtree(folder, ignore_errors=True)
    workdir.mkdir(parents=True, exist_ok=True)
    results: dict = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": " ".join([Path(PYTHON).name, *sys.argv]),
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
        },
        "git": git_describe(),
        "server": {
            "worker_class": args.worker_class,
            "workers": args.workers,
            "threads": args.threads if args.worker_class in ("gthread", "psm-server") else None,
        },
        "load_at_start": os.getloadavg(),
        "upstream_rate_mb_s": args.rate,
    }
    print(f"load average {os.getloadavg()[0]:.1f}; writing the files", flush=True)
    files = make_files(chan, sizes)
    upstream = make_upstream(chan, args.rate * 1e6 if args.rate else None)
    upstream_url = f"http://127.0.0.1:{upstream.server_address[1]}"
    dsn = f"{args.pg}/{args.db}"
    env = psm_env(dsn, data)
    print(f"fresh database {args.db}; migrating and syncing the passive mirror", flush=True)
    fresh_database(args.pg, args.db)
    setup_psm(ROOT, env, upstream_url)
    sides = [("", dsn, data, start_psm(env, workdir, args))]
    if args.baseline:
        base_dsn, base_data = f"{dsn}_baseline", workdir / "data-baseline"
        shutil.rmtree(base_data, ignore_errors=True)
        fresh_database(args.pg, f"{args.db}_baseline")
        base_env = psm_env(base_dsn, base_data)
        setup_psm(args.baseline.resolve(), base_env, upstream_url)
        started = start_psm(base_env, workdir, args, args.baseline.resolve(), "baseline")
        sides.append(("baseline_", base_dsn, base_data, started))
        results["baseline"] = str(args.baseline.resolve())
    proxpi = None
    out = workdir / "body"
    measured = ("first", "first_byte", "cached") + tuple(
        f"{when}_cpu_{who}" for when in ("first", "cached") for who in ("curl", "bench", "server")
    )
    times: dict[str, dict[str, list]] = {
        name: {
            key: []
            for key in (
                "direct", "direct_cpu_curl", "direct_cpu_bench",
                *(f"{prefix}{key}" for prefix, *_ in sides for key in measured),
            )
        }
        for name in files
    }  # fmt: skip
    if args.proxpi:
        for name in files:
            times[name] |= {"proxpi_first": [], "proxpi_cached": []}
    try:
        for repetition in range(args.repeat):
            for name, entry in files.items():
                for _prefix, side_dsn, side_data, _started in sides:
                    forget_files(side_dsn, side_data, files)
                direct = curl(f"{upstream_url}/noarch/{name}", out)
                check_body(out, entry, "direct")
                row = times[name]
                row["direct"].append(direct["total"])
                for key in ("cpu_curl", "cpu_bench"):
                    row[f"direct_{key}"].append(direct[key])
                line = f"  {entry['mb']} MB #{repetition + 1}: direct {direct['total']:.3f} s"
                # With a baseline, each goes first in every other repetition.
                turn = sides if repetition % 2 == 0 else sides[::-1]
                for prefix, _dsn, _data, (server, _log, port) in turn:
                    psm_url = f"http://127.0.0.1:{port}/api/repo/bench/noarch/{name}"
                    first = curl(psm_url, out, server.pid)
                    check_body(out, entry, f"PSM {prefix}first request")
                    cached = curl(psm_url, out, server.pid)
                    check_body(out, entry, f"PSM {prefix}cached request")
                    row[f"{prefix}first"].append(first["total"])
                    row[f"{prefix}first_byte"].append(first["first_byte"])
                    row[f"{prefix}cached"].append(cached["total"])
                    for key in ("cpu_curl", "cpu_bench", "cpu_server"):
                        row[f"{prefix}first_{key}"].append(first[key])
                        row[f"{prefix}cached_{key}"].append(cached[key])
                    line += (
                        f", {prefix}first {first['total']:.3f} s "
                        f"({first['total'] / direct['total']:.2f}x), "
                        f"{prefix}cached {cached['total']:.3f} s"
                    )
                if args.proxpi:
                    # A fresh proxpi (its cache index lives in memory) on an empty cache.
                    shutil.rmtree(workdir / "proxpi-cache", ignore_errors=True)
                    proxpi = start_proxpi(args.proxpi, upstream_url, workdir)
                    pport = proxpi[2]
                    purl = f"http://127.0.0.1:{pport}/index/bench/{name}"
                    # proxpi fetches the project page on the first request too: warm it.
                    subprocess.run(
                        [
                            "curl",
                            "-sS",
                            "-o",
                            "/dev/null",
                            f"http://127.0.0.1:{pport}/index/bench/",
                        ],
                        check=True,
                    )
                    pfirst = curl(purl, out)
                    check_body(out, entry, "proxpi first request")
                    pcached = curl(purl, out)
                    check_body(out, entry, "proxpi cached request")
                    stop(proxpi[0], proxpi[1])
                    proxpi = None
                    row["proxpi_first"].append(pfirst["total"])
                    row["proxpi_cached"].append(pcached["total"])
                    line += (
                        f", proxpi first {pfirst['total']:.3f} s, cached {pcached['total']:.3f} s"
                    )
                print(line, flush=True)
    finally:
        for *_side, (server, log, _port) in sides:
            stop(server, log)
        if proxpi:
            stop(proxpi[0], proxpi[1])
        upstream.shutdown()
        out.unlink(missing_ok=True)

    results["load_at_end"] = os.getloadavg()
    results["files"] = {}
    for name, entry in files.items():
        # CPU seconds are read in clock ticks (10 ms): their mean says more than a median.
        row = {
            key: round(statistics.fmean(values), 4) if "_cpu_" in key else median(values)
            for key, values in times[name].items()
            if values
        }
        direct = row["direct"]
        for prefix, *_side in sides:
            row[f"{prefix}first_ratio"] = round(row[f"{prefix}first"] / direct, 2)
            row[f"{prefix}cached_ratio"] = round(row[f"{prefix}cached"] / direct, 2)
            # Each repetition's ratio (direct and first measured back to back), their median
            # and best: on a shared machine the best is the least disturbed pair.
            ratios = [
                first / direct
                for first, direct in zip(
                    times[name][f"{prefix}first"], times[name]["direct"], strict=True
                )
            ]
            row[f"{prefix}first_ratio_median_of_pairs"] = round(statistics.median(ratios), 2)
            row[f"{prefix}first_ratio_best_pair"] = round(min(ratios), 2)
        if "proxpi_first" in row:
            row["proxpi_first_ratio"] = round(row["proxpi_first"] / direct, 2)
            row["proxpi_cached_ratio"] = round(row["proxpi_cached"] / direct, 2)
        row["samples"] = times[name]
        results["files"][entry["mb"]] = row
    target = args.json or workdir / "results.json"
    target.write_text(json.dumps(results, indent=2))

    print(f"\nmedians of {args.repeat} (s; ratio to the direct download; CPU s: means)")
    for mb, row in results["files"].items():
        line = f"{mb:>5} MB  direct {row['direct']:.3f}"
        for prefix, *_side in sides:
            line += (
                f"\n{'':>9}{prefix}first {row[f'{prefix}first']:.3f} "
                f"({row[f'{prefix}first_ratio']:.2f}x, first byte "
                f"{row[f'{prefix}first_byte']:.3f})  cached {row[f'{prefix}cached']:.3f} "
                f"({row[f'{prefix}cached_ratio']:.2f}x)  pairs: median "
                f"{row[f'{prefix}first_ratio_median_of_pairs']:.2f}x, best "
                f"{row[f'{prefix}first_ratio_best_pair']:.2f}x; CPU s: PSM "
                f"{row[f'{prefix}first_cpu_server']:.3f} + curl "
                f"{row[f'{prefix}first_cpu_curl']:.3f} + upstream "
                f"{row[f'{prefix}first_cpu_bench']:.3f} (cached: PSM "
                f"{row[f'{prefix}cached_cpu_server']:.3f})"
            )
        line += (
            f"\n{'':>9}direct CPU s: curl {row['direct_cpu_curl']:.3f} + upstream "
            f"{row['direct_cpu_bench']:.3f}"
        )
        if "proxpi_first" in row:
            line += (
                f"  proxpi first {row['proxpi_first']:.3f} ({row['proxpi_first_ratio']:.2f}x) "
                f"cached {row['proxpi_cached']:.3f} ({row['proxpi_cached_ratio']:.2f}x)"
            )
        print(line)
    print(
        f"load average {results['load_at_start'][0]:.1f} at start, "
        f"{results['load_at_end'][0]:.1f} at end; results: {target}"
    )


if __name__ == "__main__":
    main()
