"""Benchmark a passive Python (simple index) mirror of a PyPI-scale index on PostgreSQL.

    .venv/bin/python benchmarks/bench_pypi.py [--projects 200000] [--files-per-project 10]
        [--workdir /tmp/psm-bench-pypi] [--pg postgres://postgres@127.0.0.1:5432]
        [--db psm_bench_pypi] [--mutate 0.01] [--conditional] [--sync-timeout S]
        [--serve-seconds 15] [--serve-workers 2] [--no-serve] [--no-vacuum] [--py-spy]
        [--json FILE]

What it does, in order:

1. Upstream: a threaded HTTP server in this process makes up a PyPI-like simple index on the
   fly, nothing on disk. `--projects` projects `proj-000000`, ... each list
   `--files-per-project` files (an sdist, a pure wheel, a manylinux wheel and a Windows wheel
   per version, versions 1.0.0, 1.0.1, ...), everything derived from (project, serial):
   fake but well-formed sha256, size, upload-time, requires-python, yanked, and core-metadata
   for wheels (PEP 691 / 700 / 714). The root `/simple/` is PyPI's JSON, with `_last-serial`
   per project and in `meta`, pre-encoded. A project page `/simple/<project>/` is built per
   request with orjson; it has `meta._last-serial`, an ETag (serial-derived; `If-None-Match`
   gets a 304) and `X-PyPI-Last-Serial`. Files are not served (the mirror is passive).
2. Database: drops and creates `--db`, migrates, creates a channel `bench` of kind pypi and a
   passive mirror `bench` of `<upstream>/simple/` (all projects, no filters).
3. Syncs, each one `manage.py mirror_run bench` in its own process (wall, cpu and peak RSS of
   that process; upstream requests by kind; what the run counted; progress sampled every
   `--sample` s): full (empty database), unchanged, with `--conditional` unchanged with a
   root that has no serials (the ETag path: one conditional request per project), then
   `--mutate` (1%) of the projects changed: each gets a new serial and one more file.
   `VACUUM (ANALYZE)` of the database runs between syncs, untimed (`--no-vacuum` skips it).
4. Serving: gunicorn (`--serve-workers` sync workers) and wrk (else a threaded Python client)
   on `/api/repo/bench/simple/proj-000123/`: JSON (PEP 691 Accept), HTML, JSON with
   If-None-Match (304), and the project list `/api/repo/bench/simple/` as JSON.

Prints a table and writes JSON (`<workdir>/results.json` unless `--json`). Nothing is
asserted (see benchmarks/README.md for the targets). `--py-spy` runs each sync under
`py-spy record -r 100 -f raw --idle` (`<workdir>/run-N.pyspy.txt`, collapsed stacks); its
timings include the profiler's overhead. `--sync-timeout` stops a sync that takes longer
(recorded as timed out, with the progress it made).
"""

from __future__ import annotations

import argparse
import hashlib
import http.client
import importlib.util
import json
import os
import platform
import random
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import orjson
import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_conda import (  # noqa: E402  (shared helpers)
    RSS_WRAPPER,
    free_port,
    fresh_database,
    git_describe,
    load_python,
    load_wrk,
    manage,
    psm_env,
    wait_http,
)

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
SIMPLE_JSON = "application/vnd.pypi.simple.v1+json"

# --- upstream: a synthetic PyPI -------------------------------------------------------------

#: One version's files, in this order: file j of a project is kind j % 4 of version 1.0.(j // 4).
KINDS = (
    "{w}-{v}.tar.gz",
    "{w}-{v}-py3-none-any.whl",
    "{w}-{v}-cp312-cp312-manylinux_2_17_x86_64.manylinux2014_x86_64.whl",
    "{w}-{v}-cp312-cp312-win_amd64.whl",
)
EPOCH = 1_577_836_800  # 2020-01-01T00:00:00Z


class SyntheticIndex:
    """The state of the made-up index: a serial and a number of added files per project."""

    def __init__(self, projects: int, files_per_project: int, seed: int = 1) -> None:
        self.projects, self.files_per_project, self.seed = projects, files_per_project, seed
        self.width = max(6, len(str(projects - 1)))
        # Project i starts at serial i + 1: every project has its own, as on PyPI.
        self.serials = list(range(1, projects + 1))
        self.added = [0] * projects
        self.last_serial = projects
        self.generation = 0
        self.with_serials = True
        self.counts: Counter[str] = Counter()
        self._lock = threading.Lock()
        self.root, self.root_etag = self._encode_root()

    def name(self, index: int) -> str:
        return f"proj-{index:0{self.width}d}"

    def files_of(self, index: int) -> int:
        return self.files_per_project + self.added[index]

    def total_files(self) -> int:
        return self.projects * self.files_per_project + sum(self.added)

    def _encode_root(self) -> tuple[bytes, str]:
        names = [self.name(i) for i in range(self.projects)]
        if self.with_serials:
            projects = [
                {"name": name, "_last-serial": serial}
                for name, serial in zip(names, self.serials, strict=True)
            ]
            meta = {"api-version": "1.1", "_last-serial": self.last_serial}
        else:
            projects = [{"name": name} for name in names]
            meta = {"api-version": "1.1"}
        body = orjson.dumps({"meta": meta, "projects": projects})
        tag = hashlib.blake2b(body, digest_size=8).hexdigest()
        return body, f'"{tag}"'

    def set_serials(self, on: bool) -> None:
        """Whether the root lists `_last-serial` (PyPI does; another PSM or devpi may not)."""
        self.with_serials = on
        self.root, self.root_etag = self._encode_root()

    def mutate(self, fraction: float) -> list[int]:
        """Give `fraction` of the projects (a deterministic choice) a new serial and a file."""
        self.generation += 1
        count = max(1, round(self.projects * fraction))
        chosen = sorted(
            random.Random(f"{self.seed}-{self.generation}").sample(range(self.projects), count)
        )
        for index in chosen:
            self.last_serial += 1
            self.serials[index] = self.last_serial
            self.added[index] += 1
        self.root, self.root_etag = self._encode_root()
        return chosen

    def page_etag(self, index: int) -> str:
        return f'"s{self.serials[index]:x}-{self.added[index]:x}"'

    def page(self, index: int) -> bytes:
        name = self.name(index)
        wheel_name = name.replace("-", "_")
        files, versions = [], []
        for j in range(self.files_of(index)):
            version = f"1.0.{j // len(KINDS)}"
            if not versions or versions[-1] != version:
                versions.append(version)
            filename = KINDS[j % len(KINDS)].format(w=wheel_name, v=version)
            digest = hashlib.blake2b(f"{index}/{j}".encode(), digest_size=32).hexdigest()
            uploaded = time.gmtime(EPOCH + index * 600 + j * 60)
            entry = {
                "filename": filename,
                "url": f"/files/{name}/{filename}",
                "hashes": {"sha256": digest},
                "requires-python": ">=3.8",
                "size": 10_000 + (index * 7919 + j * 104_729) % 5_000_000,
                "upload-time": time.strftime("%Y-%m-%dT%H:%M:%S.000000Z", uploaded),
                "yanked": False,
            }
            if filename.endswith(".whl"):
                entry["core-metadata"] = {"sha256": digest[::-1]}
                entry["data-dist-info-metadata"] = entry["core-metadata"]
            files.append(entry)
        page = {
            "meta": {"api-version": "1.1", "_last-serial": self.serials[index]},
            "name": name,
            "versions": versions,
            "files": files,
        }
        return orjson.dumps(page)

    def count(self, what: str) -> None:
        with self._lock:
            self.counts[what] += 1

    def index_of(self, name: str) -> int | None:
        prefix = "proj-"
        digits = name[len(prefix) :]
        if not name.startswith(prefix) or len(digits) != self.width or not digits.isdigit():
            return None
        index = int(digits)
        return index if index < self.projects else None


def make_upstream(index: SyntheticIndex) -> ThreadingHTTPServer:
    """Serve `index` at /simple/ (root) and /simple/<project>/ (pages), JSON only."""

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        # Headers and body are two writes: with Nagle the body waits for the client's delayed
        # ACK, 40 ms per keep-alive request (the sync's client would seem to wait on upstream).
        disable_nagle_algorithm = True

        def log_message(self, *args) -> None:  # quiet
            pass

        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            parts = path.split("/")
            if path == "/simple/":
                self._answer("root", index.root, index.root_etag, index.last_serial)
                return
            if len(parts) == 4 and parts[1] == "simple" and parts[3] == "":
                found = index.index_of(parts[2])
                if found is not None:
                    etag = index.page_etag(found)
                    if self._not_modified(etag):
                        self._send(304, b"", etag, index.serials[found])
                        index.count("page 304")
                        return
                    self._send(200, index.page(found), etag, index.serials[found])
                    index.count("page 200")
                    return
            index.count("404")
            self._send(404, b"", "", None)

        def _answer(self, kind: str, body: bytes, etag: str, serial: int) -> None:
            if self._not_modified(etag):
                self._send(304, b"", etag, serial)
                index.count(f"{kind} 304")
            else:
                self._send(200, body, etag, serial)
                index.count(f"{kind} 200")

        def _not_modified(self, etag: str) -> bool:
            match = self.headers.get("If-None-Match")
            return bool(match) and etag in [t.strip() for t in match.split(",")]

        def _send(self, status: int, body: bytes, etag: str, serial: int | None) -> None:
            self.send_response(status)
            if status == 200:
                self.send_header("Content-Type", SIMPLE_JSON)
            if etag:
                self.send_header("ETag", etag)
            if serial is not None:
                self.send_header("X-PyPI-Last-Serial", str(serial))
            if status != 304:
                self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if body:
                self.wfile.write(body)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


# --- database and PSM -------------------------------------------------------------------------

SETUP = """
from channels_app.models import Channel
from mirrors_app.models import Mirror
channel = Channel.objects.create(name="bench", kind="pypi")
Mirror.objects.create(channel=channel, name="bench", mode="passive", kind="pypi",
                      source_url={url!r}, options={{}})
"""

#: A step naming one project ("proj-000123: fetching the index") is summarised, not listed.
PROJECT_STEP = re.compile(r"^proj-\d+: (.*)$")


def tree_rss_mb(pid: int) -> float:
    """The largest resident set among `pid` and its descendants (Linux /proc), in MB."""
    largest, todo = 0, [pid]
    while todo:
        current = todo.pop()
        try:
            with open(f"/proc/{current}/status") as status:
                for line in status:
                    if line.startswith("VmRSS:"):
                        largest = max(largest, int(line.split()[1]))
                        break
            with open(f"/proc/{current}/task/{current}/children") as children:
                todo.extend(int(child) for child in children.read().split())
        except (OSError, ValueError):
            continue
    return round(largest / 1024, 1)


class Watcher:
    """Polls the running run: when each kind of step was first (and last) seen and the largest
    RSS of the sync process during it (`pid`, once set), and its counters every `sample`
    seconds (progress over time shows a slowdown as the data grows)."""

    def __init__(self, dsn: str, period: float = 0.1, sample: float = 10.0, echo: float = 60.0):
        self.dsn, self.period, self.sample, self.echo = dsn, period, sample, echo
        self.steps: list[list] = []  # [first seen s, step, last seen s, largest RSS MB]
        self.pid: int | None = None
        self.samples: list[dict] = []
        self._by_step: dict[str, list] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def __enter__(self) -> Watcher:
        with psycopg.connect(self.dsn) as conn:
            self._after = conn.execute(
                "SELECT coalesce(max(id), 0) FROM mirrors_app_syncrun"
            ).fetchone()[0]
        self.start = time.monotonic()
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def _poll(self) -> None:
        next_sample = next_echo = 0.0
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            while not self._stop.is_set():
                row = conn.execute(
                    "SELECT step, seen, ingested, filtered FROM mirrors_app_syncrun "
                    "WHERE id > %s ORDER BY id DESC LIMIT 1",
                    (self._after,),
                ).fetchone()
                now = round(time.monotonic() - self.start, 2)
                rss = tree_rss_mb(self.pid) if self.pid else 0.0
                if row and row[0]:
                    matched = PROJECT_STEP.match(row[0])
                    step = f"<project>: {matched.group(1)}" if matched else row[0]
                    entry = self._by_step.get(step)
                    if entry is None:
                        entry = self._by_step[step] = [now, step, now, rss]
                        self.steps.append(entry)
                    entry[2], entry[3] = now, max(entry[3], rss)
                if row and now >= next_sample:
                    next_sample = now + self.sample
                    self.samples.append(
                        {
                            "t": now,
                            "seen": row[1],
                            "ingested": row[2],
                            "rss_mb": rss,
                            "step": row[0],
                        }
                    )
                if row and self.echo and now >= next_echo and now > 0:
                    next_echo = now + self.echo
                    print(
                        f"    {now:7.0f} s: seen {row[1]:,}, written {row[2]:,}, RSS {rss:.0f} MB, "
                        f"{row[0]}",
                        flush=True,
                    )
                self._stop.wait(self.period)


def database_figures(dsn: str) -> dict:
    """Row counts and sizes after a sync (untimed)."""
    with psycopg.connect(dsn) as conn:
        figures = {}
        packages, live = conn.execute(
            "SELECT count(*), count(*) FILTER (WHERE NOT removed) FROM channels_app_package"
        ).fetchone()
        figures["package_rows"], figures["live_rows"] = packages, live
        figures["published_files"] = conn.execute(
            "SELECT count(*) FROM channels_app_publishedfile"
        ).fetchone()[0]
        for table in (
            "channels_app_package",
            "channels_app_publishedfile",
            "channels_app_artifact",
            "mirrors_app_mirrorunit",
        ):
            size = conn.execute(
                "SELECT CASE WHEN to_regclass(%s) IS NULL THEN NULL "
                "ELSE pg_total_relation_size(%s) / 1e6 END",
                (table, table),
            ).fetchone()[0]
            if size is not None:
                figures[f"{table}_mb"] = round(float(size), 1)
        figures["mirror_listing_validators_kb"] = round(
            conn.execute(
                "SELECT coalesce(octet_length(listing_validators::text), 0) "
                "FROM mirrors_app_mirror WHERE name = 'bench'"
            ).fetchone()[0]
            / 1e3,
            1,
        )
    return figures


def run_sync(
    env: dict,
    dsn: str,
    workdir: Path,
    index: SyntheticIndex,
    label: str,
    number: int,
    *,
    py_spy: bool,
    timeout: float | None,
    sample: float,
) -> dict:
    stats_file = workdir / f"run-{number}.rusage.json"
    stats_file.unlink(missing_ok=True)
    command = []
    if py_spy:
        spy = Path(PYTHON).with_name("py-spy")
        if not spy.exists():  # installed elsewhere (its own environment), on PATH
            spy = Path(shutil.which("py-spy") or spy)
        command += [str(spy), "record", "-r", "100", "-f", "raw", "--idle"]
        command += ["-o", str(workdir / f"run-{number}.pyspy.txt"), "--"]
    command += [PYTHON, str(ROOT / "manage.py"), "mirror_run", "bench"]
    log = workdir / f"run-{number}.log"
    load_before = os.getloadavg()[0]
    counts_before = Counter(index.counts)
    cpu_before = time.process_time()
    timed_out = False
    with Watcher(dsn, sample=sample) as watcher, open(log, "w") as out:
        started = time.monotonic()
        process = subprocess.Popen(
            [PYTHON, "-c", RSS_WRAPPER, str(stats_file), *command],
            env=env,
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        watcher.pid = process.pid
        try:
            code = process.wait(timeout)
        except subprocess.TimeoutExpired:
            timed_out = True
            # SIGINT first: py-spy then still writes its profile; the whole group after.
            os.killpg(process.pid, signal.SIGINT)
            try:
                code = process.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                code = process.wait()
        wall = time.monotonic() - started
    upstream_cpu = time.process_time() - cpu_before
    usage = json.loads(stats_file.read_text()) if stats_file.exists() else {}
    requests = dict(Counter(index.counts) - counts_before)
    with psycopg.connect(dsn) as conn:
        row = conn.execute(
            "SELECT state, seen, ingested, filtered, step, error FROM mirrors_app_syncrun "
            "ORDER BY id DESC LIMIT 1"
        ).fetchone()
        if timed_out and row and row[0] in ("running", "stopping"):
            conn.execute(
                "UPDATE mirrors_app_syncrun SET state = 'failed', error = 'benchmark timeout' "
                "WHERE id = (SELECT max(id) FROM mirrors_app_syncrun)"
            )
            conn.execute("UPDATE mirrors_app_mirror SET status = 'failed'")
    state, seen, ingested, filtered, step, error = row
    result = {
        "label": label,
        "exit_code": code,
        "timed_out": timed_out,
        "state": "timed out" if timed_out else state,
        "last_step": step,
        "wall_s": round(wall, 2),
        "load_before": round(load_before, 2),
        "load_after": round(os.getloadavg()[0], 2),
        "cpu_user_s": round(usage.get("user", 0), 2),
        "cpu_sys_s": round(usage.get("sys", 0), 2),
        "peak_rss_mb": round(usage.get("maxrss_kb", 0) / 1024, 1),
        "upstream_cpu_s": round(upstream_cpu, 2),
        "upstream_requests": requests,
        "projects": index.projects,
        "projects_per_s": round(index.projects / wall) if wall else None,
        "seen": seen,
        "ingested": ingested,
        "filtered": filtered,
        "steps": watcher.steps,
        "samples": watcher.samples,
        "log": str(log),
    }
    if error:
        result["error"] = error[:2000]
    if code and not timed_out:
        result["output_tail"] = log.read_text()[-3000:]
    return result


def vacuum_analyze(dsn: str) -> float:
    """What autovacuum would do after a big write (untimed; this server may have it off)."""
    started = time.monotonic()
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("VACUUM (ANALYZE)")
    return round(time.monotonic() - started, 1)


def blob_figures(data: Path) -> dict:
    count = size = 0
    for folder, _dirs, files in os.walk(data / "blobs"):
        for name in files:
            count += 1
            size += os.stat(os.path.join(folder, name)).st_size
    return {"blobs": count, "blobs_mb": round(size / 1e6, 1)}


# --- serving ----------------------------------------------------------------------------------


def get_headers(port: int, path: str, headers: dict[str, str]) -> dict[str, str]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    conn.request("GET", path, headers=headers)
    response = conn.getresponse()
    body = response.read()
    conn.close()
    found = {k.lower(): v for k, v in response.getheaders()}
    return found | {"status": str(response.status), "bytes": str(len(body))}


def measure_serving(env: dict, workdir: Path, seconds: int, workers: int, project: str) -> dict:
    port = free_port()
    log = open(workdir / "gunicorn.log", "w")
    server = subprocess.Popen(
        [PYTHON, "-m", "gunicorn", "psm.wsgi", "-w", str(workers), "-b", f"127.0.0.1:{port}"]
        + ["--timeout", "300", "--log-level", "warning"],
        env=env,
        cwd=ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base = "/api/repo/bench/simple/"
    page = f"{base}{project}/"
    results: dict = {"workers": workers, "port": port, "project": project}
    try:
        wait_http("127.0.0.1", port, page)
        load = load_wrk if shutil.which("wrk") else load_python
        as_json = {"Accept": SIMPLE_JSON}
        first = get_headers(port, page, as_json)
        root = get_headers(port, base, as_json)
        results["page_json_bytes"] = int(first["bytes"])
        results["page_status"] = int(first["status"])
        results["root_json_mb"] = round(int(root["bytes"]) / 1e6, 2)
        cases = [
            (f"GET simple/{project}/ JSON", page, 16, as_json),
            (f"GET simple/{project}/ HTML", page, 16, {"Accept": "text/html"}),
            (
                f"GET simple/{project}/ JSON, If-None-Match (304)",
                page,
                16,
                {**as_json, "If-None-Match": first.get("etag", "")},
            ),
            ("GET simple/ (project list) JSON", base, 2, as_json),
        ]
        results["cases"] = []
        for label, path, connections, headers in cases:
            url = f"http://127.0.0.1:{port}{path}"
            measured = load(url, connections, seconds, headers)
            results["cases"].append({"label": label, "connections": connections, **measured})
            print(f"  {label}: {measured}", flush=True)
    finally:
        server.terminate()
        server.wait(30)
        log.close()
    return results


# --- driver -----------------------------------------------------------------------------------


def print_table(results: dict) -> None:
    print()
    print(
        f"{'sync':<34}{'wall s':>9}{'cpu s':>8}{'RSS MB':>8}{'proj/s':>8}{'pages 200':>10}"
        f"{'pages 304':>10}{'written':>10}{'up cpu s':>9}"
    )
    for run in results["syncs"]:
        cpu = run["cpu_user_s"] + run["cpu_sys_s"]
        requests = run["upstream_requests"]
        print(
            f"{run['label']:<34}{run['wall_s']:>9.1f}{cpu:>8.1f}{run['peak_rss_mb']:>8.0f}"
            f"{run['projects_per_s'] or 0:>8,}{requests.get('page 200', 0):>10,}"
            f"{requests.get('page 304', 0):>10,}{run['ingested'] or 0:>10,}"
            f"{run['upstream_cpu_s']:>9.1f}"
            + ("" if run["state"] == "completed" else f"  ({run['state']})")
        )
    for run in results["syncs"]:
        steps = ", ".join(
            f"{first:.1f}s {step}"
            + (f" (to {last:.1f}s" if last - first >= 1 else " (")
            + f" {rss:.0f} MB)"
            for first, step, last, rss in run["steps"]
        )
        print(f"  {run['label']}: {steps}")
    serving = results.get("serving")
    if serving:
        print()
        print(f"serving (gunicorn, {serving['workers']} sync workers):")
        print(f"{'request':<52}{'conns':>6}{'req/s':>10}{'MB/s':>9}{'latency':>10}")
        for case in serving["cases"]:
            print(
                f"{case['label']:<52}{case['connections']:>6}{case['requests_per_s']:>10}"
                f"{case['mb_per_s'] or 0:>9}{case.get('avg_latency') or '':>10}"
            )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--projects", type=int, default=200_000)
    parser.add_argument("--files-per-project", type=int, default=10)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/psm-bench-pypi"))
    parser.add_argument("--pg", default="postgres://postgres@127.0.0.1:5432", help="server URL")
    parser.add_argument("--db", default="psm_bench_pypi")
    parser.add_argument("--mutate", type=float, default=0.01)
    parser.add_argument(
        "--conditional",
        action="store_true",
        help="also re-sync unchanged with a root without serials (one 304 per project)",
    )
    parser.add_argument("--sync-timeout", type=float, help="stop a sync after this many seconds")
    parser.add_argument("--sample", type=float, default=10.0, help="progress sample period, s")
    parser.add_argument("--serve-seconds", type=int, default=15)
    parser.add_argument("--serve-workers", type=int, default=2)
    parser.add_argument("--no-serve", action="store_true")
    parser.add_argument("--no-vacuum", action="store_true", help="no VACUUM ANALYZE between syncs")
    parser.add_argument("--py-spy", action="store_true", help="py-spy record every sync")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    workdir: Path = args.workdir.resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    data = workdir / "data"
    shutil.rmtree(data, ignore_errors=True)
    results: dict = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": " ".join([Path(PYTHON).name, *sys.argv]),
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "memory_gb": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30),
        },
        "projects": args.projects,
        "files_per_project": args.files_per_project,
        "git": git_describe(),
        "load_at_start": os.getloadavg(),
    }
    if os.getloadavg()[0] > 0.5:
        print(
            f"warning: load average {os.getloadavg()[0]:.1f}: other work competes for the CPUs "
            "and the timings will be too high",
            flush=True,
        )

    index = SyntheticIndex(args.projects, args.files_per_project)
    results["upstream"] = {
        "files": index.total_files(),
        "root_json_mb": round(len(index.root) / 1e6, 2),
        "page_json_bytes": len(index.page(0)),
    }
    upstream = make_upstream(index)
    upstream_url = f"http://127.0.0.1:{upstream.server_address[1]}/simple/"
    dsn = f"{args.pg}/{args.db}"
    env = psm_env(dsn, data)
    print(
        f"upstream {upstream_url}: {args.projects:,} projects, {index.total_files():,} files; "
        f"fresh database {args.db}; migrating",
        flush=True,
    )
    fresh_database(args.pg, args.db)
    manage(env, "migrate", "--noinput")
    with psycopg.connect(dsn) as conn:
        results["pg"] = dict(
            conn.execute(
                "SELECT name, setting FROM pg_settings WHERE name IN ('server_version', "
                "'autovacuum', 'shared_buffers', 'synchronous_commit', 'work_mem')"
            ).fetchall()
        )
    manage(env, "shell", "-c", SETUP.format(url=upstream_url))

    plan = [("full (empty db)", None), ("unchanged", None)]
    if args.conditional:
        plan.append(("unchanged, no serials (ETag/304)", "no-serials"))
    plan.append((f"{args.mutate:.0%} of projects changed", "mutate"))
    results["syncs"] = []
    for number, (label, before) in enumerate(plan, 1):
        if before == "no-serials":
            index.set_serials(False)
        elif not index.with_serials:
            index.set_serials(True)
        if before == "mutate":
            chosen = index.mutate(args.mutate)
            results["mutated_projects"] = len(chosen)
            results["mutated_sample"] = [index.name(i) for i in chosen[:5]]
        print(f"sync {number}: {label}", flush=True)
        run = run_sync(
            env,
            dsn,
            workdir,
            index,
            label,
            number,
            py_spy=args.py_spy,
            timeout=args.sync_timeout,
            sample=args.sample,
        )
        run.update(database_figures(dsn))
        run.update(blob_figures(data))
        print(
            f"  {run['state']} in {run['wall_s']} s, peak RSS {run['peak_rss_mb']} MB, "
            f"upstream {run['upstream_requests']}",
            flush=True,
        )
        results["syncs"].append(run)
        if run["exit_code"] or run["timed_out"]:
            print(run.get("output_tail", ""), file=sys.stderr)
            break
        if not args.no_vacuum:
            run["vacuum_analyze_s"] = vacuum_analyze(dsn)
    results["upstream"]["files_at_end"] = index.total_files()

    upstream.shutdown()
    ok = all(r["exit_code"] == 0 and not r["timed_out"] for r in results["syncs"])
    if not args.no_serve and importlib.util.find_spec("gunicorn") is None:
        print("serving skipped: gunicorn is not installed (.venv/bin/pip install gunicorn)")
    elif not args.no_serve and ok:
        print("serving", flush=True)
        project = index.name(min(123, args.projects - 1))
        results["serving"] = measure_serving(
            env, workdir, args.serve_seconds, args.serve_workers, project
        )

    out = args.json or workdir / "results.json"
    out.write_text(json.dumps(results, indent=2))
    print_table(results)
    print(f"\nresults: {out}")


if __name__ == "__main__":
    main()
