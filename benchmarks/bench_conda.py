"""Benchmark a passive conda mirror of a conda-forge-scale subdir on PostgreSQL.

    .venv/bin/python benchmarks/bench_conda.py [--records 600000] [--workdir /tmp/psm-bench]
        [--source DIR] [--pg postgres://postgres@127.0.0.1:5432] [--db psm_bench]
        [--mutate 0.01] [--touch] [--serve-seconds 15] [--no-serve] [--no-vacuum]
        [--profile] [--spy] [--policy] [--only-full] [--no-jlap] [--process] [--from-psm]
        [--broker redis://127.0.0.1:6379/13] [--json FILE]

What it does, in order:

1. Data: generates `<workdir>/chan` with gen_conda.py (or copies `--source`, an already generated
   channel of the same `--records`; the copy is what gets mutated, never the source). Each
   subdir has a `repodata.jlap` beside its repodata.json, as conda-forge's CDN publishes it
   (gen_conda.py keeps it: `--mutate` appends the patch); `--no-jlap` runs without it.
2. Upstream: serves `<workdir>/chan` on 127.0.0.1 with a threaded HTTP server that sends an
   ETag (size + mtime), answers If-None-Match with 304 and a GET with `Range: bytes=N-` (or
   `N-M`, `-N`) with 206 and that part (416 past the end), like a CDN would.
3. Database: drops and creates `--db` on the `--pg` server, migrates, creates a conda channel
   `bench` and a passive mirror `bench` of linux-64 (+ noarch) from the upstream.
   `--from-psm`: the upstream is a PSM channel instead, as for a mirror of another PSM
   server's channel: a channel `origin` mirrors the generated one (its syncs untimed, in the
   same worker), gunicorn (2 sync workers) serves it, and the mirror `bench` reads it from
   there, `repodata.jlap` included (PSM writes one per subdir). The limit reads the same.
4. Syncs, as production runs them: in one Celery worker (prefork, one pool process) started
   before the first, each queued as the "Run now" button queues it, and timed from its run's
   creation to its end (what a user who pressed the button waits); CPU and peak RSS are the
   pool process's. `--process` runs each instead as a `manage.py mirror_run bench` process
   (its start-up and exit in its wall time; implied by `--profile` and `--spy`). For each:
   wall time, CPU, peak RSS, records/s, and when each step began (read from the run's `step`
   while it runs):
   full (empty database), unchanged (upstream answers 304), with `--touch` the same records
   under a new ETag (a full fetch and parse that writes nothing), 1% changed (after
   `gen_conda.py --mutate` on the copy: 1% of the records get a new build string, so as many
   packages are added as are dropped). Between syncs, untimed, `VACUUM (ANALYZE)` of the
   package table stands in for autovacuum, then a `CHECKPOINT` (`--no-vacuum` to skip both).
5. Serving: starts gunicorn (2 sync workers) on the data and measures requests/s with wrk
   (else a threaded Python client): full GET of linux-64/repodata.json, of .json.zst, and a
   conditional GET with If-None-Match (304).

Prints a table and writes JSON (`<workdir>/results.json` unless `--json`). Nothing is
asserted: the figures are for the reader (see benchmarks/README.md for targets and results).
"run s" is a sync as the worker times it (its run's start to its end): in a worker, without
the wait in the queue; as a process, without its start-up. `--profile` also runs each sync
under cProfile (`<workdir>/run-N.prof`), `--spy` under py-spy (every thread,
`<workdir>/run-N.spy.txt`); timings then include the profiler's overhead, so compare them
with a run without it.
"""

from __future__ import annotations

import argparse
import email.utils
import http.client
import importlib.util
import json
import os
import platform
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import psycopg

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
SUBDIR = "linux-64"

# --- upstream ---------------------------------------------------------------------------------


def byte_range(value: str | None, size: int) -> tuple[int, int] | None:
    """The first and last byte a GET's `Range` header asks for (a single `bytes=N-`, `N-M` or
    `-N`), the last clipped to the file; None to answer with the whole file (no header, or one
    this server does not take, such as several ranges). A first byte at or past `size` is for
    a 416."""
    if value is None:
        return None
    match = re.fullmatch(r"bytes=(\d*)-(\d*)", value.strip())
    if not match or not any(match.groups()):
        return None
    first, last = match.groups()
    if not first:  # the last N bytes
        count = int(last)
        return (max(size - count, 0), size - 1) if count else (size, size)
    start = int(first)
    end = min(int(last), size - 1) if last else size - 1
    if last and int(last) < start:
        return None
    return start, end


#: Bytes per paced sendfile(2) call when the upstream's rate is limited (`--rate`).
PACED_SLICE = 256 * 1024


def send_file(connection, handle, start: int, count: int, rate: float | None = None) -> None:
    """Send `count` bytes of the open file `handle` from `start` with sendfile; with `rate`
    (bytes per second) paced to it, as a network link of that bandwidth would."""
    if rate is None:
        connection.sendfile(handle, start, count)
        return
    began, sent = time.monotonic(), 0
    while sent < count:
        sent += connection.sendfile(handle, start + sent, min(PACED_SLICE, count - sent))
        ahead = sent / rate - (time.monotonic() - began)
        if ahead > 0:
            time.sleep(ahead)


def make_upstream(root: Path, rate: float | None = None) -> ThreadingHTTPServer:
    """A static file server for `root` with ETag/If-None-Match, Last-Modified and single byte
    ranges (GET, HEAD); `rate`: bytes per second a body is paced to (see `send_file`)."""

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args) -> None:  # quiet
            pass

        def do_HEAD(self) -> None:
            self._serve(body=False)

        def do_GET(self) -> None:
            self._serve(body=True)

        def _serve(self, *, body: bool) -> None:
            path = (root / self.path.split("?", 1)[0].lstrip("/")).resolve()
            if root not in path.parents or not path.is_file():
                self.send_response(404)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            st = path.stat()
            etag = f'"{st.st_size:x}-{st.st_mtime_ns:x}"'
            modified = email.utils.formatdate(st.st_mtime, usegmt=True)
            match = self.headers.get("If-None-Match")
            if match and etag in [t.strip() for t in match.split(",")]:
                self.send_response(304)
                self.send_header("ETag", etag)
                self.end_headers()
                return
            part = byte_range(self.headers.get("Range"), st.st_size) if body else None
            if_range = self.headers.get("If-Range")
            if if_range is not None and if_range.strip() not in (etag, modified):
                part = None  # the file changed since: all of it
            if part and part[0] >= st.st_size:
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{st.st_size}")
                self.send_header("Content-Length", "0")
                self.send_header("ETag", etag)
                self.end_headers()
                return
            start, end = part or (0, st.st_size - 1)
            self.send_response(206 if part else 200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(end - start + 1))
            if part:
                self.send_header("Content-Range", f"bytes {start}-{end}/{st.st_size}")
            self.send_header("Accept-Ranges", "bytes")
            self.send_header("ETag", etag)
            self.send_header("Last-Modified", modified)
            self.end_headers()
            if body and end >= start:
                with open(path, "rb") as handle:  # from the offset: never the whole file
                    self.wfile.flush()
                    send_file(self.connection, handle, start, end - start + 1, rate)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


# --- database and PSM -------------------------------------------------------------------------


def psm_env(dsn: str, data: Path) -> dict[str, str]:
    """The environment PSM's processes run with in a benchmark: its own database and data
    folder, loopback upstreams allowed."""
    return {
        **os.environ,
        "DATABASE_URL": dsn,
        "PSM_DATA_DIR": str(data),
        "PSM_UPSTREAM_ALLOWLIST": "127.0.0.1",
        "PSM_SECRET_KEY": "benchmark-only-not-secret",
        "DJANGO_SETTINGS_MODULE": "psm.settings",
    }


def fresh_database(pg: str, db: str) -> None:
    with psycopg.connect(f"{pg}/postgres", autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{db}"')


def vacuum_analyze(dsn: str) -> float:
    """What autovacuum would do after a big write (untimed here; this server may have it off),
    and a checkpoint: the writeback of what the last sync wrote is not the next one's."""
    started = time.monotonic()
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("VACUUM (ANALYZE) channels_app_package")
        conn.execute("CHECKPOINT")
    return round(time.monotonic() - started, 1)


def manage(env: dict, *args: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(
        [PYTHON, str(ROOT / "manage.py"), *args],
        env=env,
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
        **kwargs,
    )


SETUP = """
from channels_app.models import Channel
from mirrors_app.models import Mirror
channel = Channel.objects.create(name="bench", kind="conda")
Mirror.objects.create(channel=channel, name="bench", mode="passive", kind="conda",
                      source_url={url!r}, options={{"subdirs": [{subdir!r}]}})
"""

#: `--policy`: every file is decided at the end of each sync that changed something.
POLICY = """
from channels_app.models import Channel
from policies_app.models import Policy
policy = Policy.objects.create(
    name="bench", package_type="conda", licenses_exclude=["GPL3"], min_age_days=30,
    block_specs=["pkg-000001", "pkg-000002 >=10"],
)
Channel.objects.filter(name="bench").update(policy=policy)
"""

RSS_WRAPPER = """
import resource, subprocess, sys, json
code = subprocess.call(sys.argv[2:])
usage = resource.getrusage(resource.RUSAGE_CHILDREN)
with open(sys.argv[1], "w") as out:
    json.dump({"code": code, "maxrss_kb": usage.ru_maxrss, "user": usage.ru_utime,
               "sys": usage.ru_stime}, out)
sys.exit(code)
"""


class StepWatcher:
    """Polls the running run's `step` and notes when each step was first seen; on a local
    server, also the CPU time of the database's other backends (the sync's connections), read
    from /proc: a figure other work on the machine moves less than wall time."""

    def __init__(self, dsn: str, period: float = 0.1) -> None:
        self.dsn, self.period = dsn, period
        self.steps: list[tuple[float, str]] = []
        self.first_seen = 0.0  # when the run was first seen, after the watcher's start
        self.backend_cpu: dict[int, float] = {}  # pid -> CPU seconds last seen
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def __enter__(self) -> StepWatcher:
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
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            while not self._stop.is_set():
                row = conn.execute(
                    "SELECT step FROM mirrors_app_syncrun WHERE id > %s ORDER BY id DESC LIMIT 1",
                    (self._after,),
                ).fetchone()
                if row and not self.first_seen:
                    self.first_seen = round(time.monotonic() - self.start, 2)
                if row and row[0] and (not self.steps or self.steps[-1][1] != row[0]):
                    self.steps.append((round(time.monotonic() - self.start, 2), row[0]))
                pids = conn.execute(
                    "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
                    "AND pid <> pg_backend_pid()"
                ).fetchall()
                for (pid,) in pids:
                    if (cpu := _process_cpu(pid)) is not None:
                        self.backend_cpu[pid] = cpu
                self._stop.wait(self.period)

    @property
    def pg_cpu_s(self) -> float:
        return round(sum(self.backend_cpu.values()), 2)


def _process_cpu(pid: int) -> float | None:
    """User plus system CPU seconds of a local process and of the children it waited for (a
    conda re-sync's comparing processes; None: not readable here)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return sum(int(field) for field in fields[11:15]) / os.sysconf("SC_CLK_TCK")


def _run_process(
    env: dict, dsn: str, workdir: Path, index: int, profile: bool, spy: bool
) -> tuple[int, float, dict, StepWatcher, Path]:
    """A sync as one `manage.py mirror_run bench` process: its exit code, wall time (start-up
    and exit included), resource usage, steps and log."""
    stats_file = workdir / f"run-{index}.rusage.json"
    command = [PYTHON]
    if spy:  # sampled, every thread, as collapsed stacks (flame graph tools read them)
        out = workdir / f"run-{index}.spy.txt"
        spy_bin = Path(PYTHON).parent / "py-spy"
        command = [str(spy_bin), "record", "-r", "200", "--idle", "--threads", "-f", "raw"]
        command += ["-o", str(out), "--", PYTHON]
    elif profile:
        command += ["-m", "cProfile", "-o", str(workdir / f"run-{index}.prof")]
    command += [str(ROOT / "manage.py"), "mirror_run", "bench"]
    log = workdir / f"run-{index}.log"
    with StepWatcher(dsn) as watcher, open(log, "w") as out:
        started = time.monotonic()
        code = subprocess.call(
            [PYTHON, "-c", RSS_WRAPPER, str(stats_file), *command],
            env=env,
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        wall = time.monotonic() - started
    return code, wall, json.loads(stats_file.read_text()), watcher, log


def run_sync(
    env: dict,
    dsn: str,
    workdir: Path,
    label: str,
    index: int,
    profile: bool,
    spy: bool = False,
    worker: Worker | None = None,
) -> dict:
    load_before = os.getloadavg()[0]
    if worker is not None:
        with StepWatcher(dsn) as watcher:
            run_id, usage = worker.run(dsn)
        watcher.steps = [(round(t - watcher.first_seen, 2), step) for t, step in watcher.steps]
        worker.settle()
        with psycopg.connect(dsn) as conn:
            state, wall = conn.execute(
                "SELECT state, extract(epoch FROM finished_at - created_at)::float "
                "FROM mirrors_app_syncrun WHERE id = %s",
                (run_id,),
            ).fetchone()
        code, log = (0 if state == "completed" else 1), workdir / "worker.log"
    else:
        code, wall, usage, watcher, log = _run_process(env, dsn, workdir, index, profile, spy)
    with psycopg.connect(dsn) as conn:
        state, seen, ingested, step, run_s = conn.execute(
            "SELECT state, seen, ingested, step, "
            "extract(epoch FROM finished_at - started_at)::float "
            "FROM mirrors_app_syncrun ORDER BY id DESC LIMIT 1"
        ).fetchone()
        packages, live = conn.execute(
            "SELECT count(*), count(*) FILTER (WHERE NOT removed) FROM channels_app_package "
            "WHERE channel_id = (SELECT id FROM channels_app_channel WHERE name = 'bench')"
        ).fetchone()
        table_mb = conn.execute(
            "SELECT pg_total_relation_size('channels_app_package') / 1e6"
        ).fetchone()[0]
    result = {
        "label": label,
        "exit_code": code,
        "state": state,
        "wall_s": round(wall, 2),
        # The run as a worker times it (started to finished): without the process's start-up.
        "run_s": round(run_s, 2) if run_s is not None else None,
        "load_before": round(load_before, 2),
        "load_after": round(os.getloadavg()[0], 2),
        "cpu_user_s": round(usage["user"], 2),
        "cpu_sys_s": round(usage["sys"], 2),
        "pg_cpu_s": watcher.pg_cpu_s,
        "peak_rss_mb": round(usage["maxrss_kb"] / 1024, 1),
        "seen": seen,
        "ingested": ingested,
        "records_per_s": round(seen / wall) if wall else None,
        "package_rows": packages,
        "live_rows": live,
        "package_table_mb": round(float(table_mb)),
        "steps": watcher.steps,
        "log": str(log),
    }
    if code:
        result["output_tail"] = log.read_text()[-2000:]
    return result


#: `--worker`: queue a run as the "Run now" button does (the worker picks it up).
RUN_NOW = """
from mirrors_app import services
from mirrors_app.models import Mirror
print(services.mirror_run_now(mirror=Mirror.objects.get(name={name!r})).pk)
"""

#: `--from-psm`: the channel `origin` mirrors the generated one; `bench` is served from it.
ORIGIN = """
from channels_app.models import Channel
from mirrors_app.models import Mirror
channel = Channel.objects.create(name="origin", kind="conda")
Mirror.objects.create(channel=channel, name="origin", mode="passive", kind="conda",
                      source_url={url!r}, options={{"subdirs": [{subdir!r}]}})
"""


class Worker:
    """A Celery worker (prefork, one pool process) started once, as production runs syncs:
    each sync is timed from its run's creation to its end (what a user who pressed "Run now"
    waits), without any process's start-up. The pool process's CPU is read from /proc and its
    peak RSS from VmHWM, which is reset before each run (Linux `clear_refs`)."""

    def __init__(self, env: dict, workdir: Path) -> None:
        self.env, self.workdir = env, workdir
        self.log = open(workdir / "worker.log", "w")  # noqa: SIM115 (closed by stop)
        command = [PYTHON, "-m", "celery", "-A", "psm", "worker", "--pool", "prefork"]
        command += ["--concurrency", "1", "--without-gossip", "--without-mingle", "-l", "info"]
        self.process = subprocess.Popen(
            command, env=env, cwd=ROOT, stdout=self.log, stderr=subprocess.STDOUT
        )
        self.child = self._pool_process()

    def _pool_process(self, timeout: float = 60) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the worker exited; see {self.log.name}")
            if "ready." in (self.workdir / "worker.log").read_text():
                for entry in Path("/proc").iterdir():
                    if entry.name.isdigit() and _parent(int(entry.name)) == self.process.pid:
                        return int(entry.name)
            time.sleep(0.2)
        raise RuntimeError(f"the worker did not start; see {self.log.name}")

    def settle(self, quiet: float = 1.0) -> None:
        """Wait until the pool process has used no CPU for `quiet` seconds (a publish may
        queue follow-up tasks, such as the large index's .bz2 copy)."""
        last = _process_cpu(self.child)
        while True:
            time.sleep(quiet)
            now = _process_cpu(self.child)
            if now is None or last is None or now - last < 0.02:
                return
            last = now

    def run(self, dsn: str, mirror: str = "bench") -> tuple[int, dict]:
        """Queue a run of `mirror` and wait for its end: its id, the pool process's CPU and
        peak RSS."""
        Path(f"/proc/{self.child}/clear_refs").write_text("5")  # reset VmHWM
        cpu_before = _process_cpu(self.child) or 0.0
        command = RUN_NOW.format(name=mirror)
        run_id = int(manage(self.env, "shell", "-c", command).stdout.split()[-1])
        with psycopg.connect(dsn, autocommit=True) as conn:
            while conn.execute(
                "SELECT finished_at IS NULL FROM mirrors_app_syncrun WHERE id = %s", (run_id,)
            ).fetchone()[0]:
                time.sleep(0.05)
        cpu = (_process_cpu(self.child) or 0.0) - cpu_before
        status = Path(f"/proc/{self.child}/status").read_text()
        peak_kb = int(re.search(r"VmHWM:\s+(\d+)", status).group(1))
        return run_id, {"user": cpu, "sys": 0.0, "maxrss_kb": peak_kb}

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(30)
        self.log.close()


def _parent(pid: int) -> int | None:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except OSError:
        return None


def run_limit(env: dict, dsn: str, workdir: Path, upstream_url: str) -> dict:
    """`conda_limit.py` in its own process: the floor every sync is compared with."""
    stats_file = workdir / "limit.rusage.json"
    url = f"{upstream_url}/{SUBDIR}/repodata.json.zst"
    command = [PYTHON, str(ROOT / "benchmarks" / "conda_limit.py"), url, dsn]
    command.append(str(workdir / "limit-out"))
    load_before = os.getloadavg()[0]
    started = time.monotonic()
    output = subprocess.run(
        [PYTHON, "-c", RSS_WRAPPER, str(stats_file), *command],
        env=env,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    wall = time.monotonic() - started
    usage = json.loads(stats_file.read_text())
    shutil.rmtree(workdir / "limit-out", ignore_errors=True)
    return {
        "wall_s": round(wall, 2),
        "load_before": round(load_before, 2),
        "cpu_s": round(usage["user"] + usage["sys"], 2),
        "peak_rss_mb": round(usage["maxrss_kb"] / 1024, 1),
        "steps": json.loads(output.strip().splitlines()[-1]),
    }


# --- serving ----------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_http(host: str, port: int, path: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            conn = http.client.HTTPConnection(host, port, timeout=5)
            conn.request("HEAD", path)
            conn.getresponse().read()
            conn.close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def head(port: int, path: str) -> dict[str, str]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.request("HEAD", path)
    response = conn.getresponse()
    response.read()
    conn.close()
    return {k.lower(): v for k, v in response.getheaders()} | {"status": str(response.status)}


def _wrk_number(value: str, unit: str) -> float:
    """wrk prints binary units (its "MB" is MiB)."""
    scale = {"B": 1, "KB": 2**10, "MB": 2**20, "GB": 2**30, "TB": 2**40}
    return float(value) * scale[unit]


def load_wrk(url: str, connections: int, seconds: int, headers: dict[str, str]) -> dict:
    command = ["wrk", f"-t{min(2, connections)}", f"-c{connections}", f"-d{seconds}s"]
    command += ["--timeout", "120s"]
    for name, value in headers.items():
        command += ["-H", f"{name}: {value}"]
    output = subprocess.run(command + [url], capture_output=True, text=True, check=True).stdout
    rps = re.search(r"Requests/sec:\s+([\d.]+)", output)
    transfer = re.search(r"Transfer/sec:\s+([\d.]+)(\w*B)", output)
    latency = re.search(r"Latency\s+([\d.]+)(\w+)", output)
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", output)
    errors = re.search(r"Socket errors: (.*)", output)
    return {
        "tool": "wrk",
        "requests_per_s": float(rps.group(1)) if rps else None,
        "mb_per_s": round(_wrk_number(*transfer.groups()) / 1e6, 1) if transfer else None,
        "avg_latency": "".join(latency.groups()) if latency else None,
        "bad_responses": int(non2xx.group(1)) if non2xx else 0,
        "socket_errors": errors.group(1) if errors else "",
    }


def load_python(url: str, connections: int, seconds: int, headers: dict[str, str]) -> dict:
    """A threaded keep-alive client: each thread repeats the GET until time is up."""
    _, _, rest = url.partition("://")
    hostport, _, path = rest.partition("/")
    host, _, port = hostport.partition(":")
    counts = {"requests": 0, "bytes": 0, "bad": 0}
    lock = threading.Lock()
    deadline = time.monotonic() + seconds

    def worker() -> None:
        conn = http.client.HTTPConnection(host, int(port), timeout=120)
        done = size = bad = 0
        while time.monotonic() < deadline:
            conn.request("GET", "/" + path, headers=headers)
            response = conn.getresponse()
            while chunk := response.read(1 << 20):
                size += len(chunk)
            bad += response.status >= 400
            done += 1
        conn.close()
        with lock:
            counts["requests"] += done
            counts["bytes"] += size
            counts["bad"] += bad

    started = time.monotonic()
    threads = [threading.Thread(target=worker) for _ in range(connections)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.monotonic() - started
    return {
        "tool": "python",
        "requests_per_s": round(counts["requests"] / elapsed, 2),
        "mb_per_s": round(counts["bytes"] / elapsed / 1e6, 1),
        "bad_responses": counts["bad"],
    }


def gunicorn(env: dict, log: Path, port: int, workers: int = 2) -> subprocess.Popen:
    """PSM served by gunicorn (sync workers) on 127.0.0.1:`port`, logging to `log`."""
    with log.open("w") as out:  # the server keeps its own copy of the handle
        return subprocess.Popen(
            [PYTHON, "-m", "gunicorn", "psm.wsgi", "-w", str(workers), "-b", f"127.0.0.1:{port}"]
            + ["--timeout", "300", "--log-level", "warning"],
            env=env,
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def measure_serving(env: dict, workdir: Path, seconds: int, workers: int) -> dict:
    port = free_port()
    server = gunicorn(env, workdir / "gunicorn.log", port, workers)
    base = "/api/repo/bench/" + SUBDIR
    results: dict = {"workers": workers, "port": port}
    try:
        wait_http("127.0.0.1", port, base + "/repodata.json")
        load = load_wrk if shutil.which("wrk") else load_python
        plain = head(port, base + "/repodata.json")
        packed = head(port, base + "/repodata.json.zst")
        results["repodata_json_mb"] = round(int(plain["content-length"]) / 1e6, 1)
        results["repodata_zst_mb"] = round(int(packed["content-length"]) / 1e6, 1)
        cases = [
            ("GET repodata.json (full body)", "/repodata.json", 2, {}),
            ("GET repodata.json.zst (full body)", "/repodata.json.zst", 2, {}),
            (
                "GET repodata.json, If-None-Match (304)",
                "/repodata.json",
                16,
                {"If-None-Match": plain["etag"]},
            ),
        ]
        results["cases"] = []
        for label, path, connections, headers in cases:
            url = f"http://127.0.0.1:{port}{base}{path}"
            measured = load(url, connections, seconds, headers)
            results["cases"].append({"label": label, "connections": connections, **measured})
            print(f"  {label}: {measured}", flush=True)
    finally:
        server.terminate()
        server.wait(30)
    return results


# --- driver -----------------------------------------------------------------------------------


def generate(out: Path, records: int, mutate: float = 0.0, jlap: bool = True) -> float:
    command = [PYTHON, str(ROOT / "benchmarks" / "gen_conda.py"), str(out)]
    command += ["--records", str(records), "--subdir", SUBDIR]
    if mutate:
        command += ["--mutate", str(mutate)]
    if not jlap:
        command.append("--no-jlap")
    started = time.monotonic()
    subprocess.run(command, check=True)
    return time.monotonic() - started


def sync_origin(worker: Worker, dsn: str) -> None:
    """`--from-psm`: sync `origin` (untimed), then let its follow-up tasks end."""
    worker.run(dsn, "origin")
    worker.settle()
    vacuum_analyze(dsn)


def git_describe() -> str:
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=ROOT,
            capture_output=True,
            text=True,
        ).stdout.strip()
    except OSError:
        return ""
    return commit + ("-dirty" if dirty else "")


def print_table(results: dict) -> None:
    print()
    print("upstream: " + ("with repodata.jlap" if results.get("jlap") else "no repodata.jlap"))
    if results.get("from_psm"):
        print("bench mirrors the PSM channel origin (itself mirroring that upstream)")
    timed = "in a Celery worker" if results.get("worker") else "as mirror_run processes"
    print(f"syncs timed {timed}")
    limit = results.get("limit")
    if limit:
        print(f"limit: {limit['wall_s']} s wall, {limit['cpu_s']} s cpu, {limit['steps']}")
    print(
        f"{'sync':<26}{'wall s':>9}{'run s':>7}{'x limit':>8}{'cpu s':>8}{'pg cpu s':>9}{'peak RSS MB':>13}"
        f"{'records/s':>12}{'seen':>9}{'written':>9}"
    )
    for run in results["syncs"]:
        cpu = run["cpu_user_s"] + run["cpu_sys_s"]
        print(
            f"{run['label']:<26}{run['wall_s']:>9.1f}{run.get('run_s') or 0:>7.1f}"
            f"{run.get('x_limit', 0):>8.2f}{cpu:>8.1f}"
            f"{run.get('pg_cpu_s', 0):>9.1f}{run['peak_rss_mb']:>13.0f}"
            f"{run['records_per_s'] or 0:>12,}{run['seen']:>9}{run['ingested']:>9}"
            + ("" if run["state"] == "completed" else f"  ({run['state']})")
        )
    for run in results["syncs"][1:]:
        by_run = f" ({run['x_full_run']:.3f} by the runs' own times)" if "x_full_run" in run else ""
        print(f"  {run['label']}: {run['x_full']:.3f} of the full sync{by_run}")
    for run in results["syncs"]:
        steps = ", ".join(f"{t:.1f}s {s}" for t, s in run["steps"])
        print(f"  {run['label']}: {steps}")
    serving = results.get("serving")
    if serving:
        print()
        print(f"serving (gunicorn, {serving['workers']} sync workers):")
        print(f"{'request':<42}{'conns':>6}{'req/s':>10}{'MB/s':>9}")
        for case in serving["cases"]:
            print(
                f"{case['label']:<42}{case['connections']:>6}{case['requests_per_s']:>10}"
                f"{case['mb_per_s'] or 0:>9}"
            )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--records", type=int, default=600_000)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/psm-bench"))
    parser.add_argument("--source", type=Path, help="an already generated channel to copy")
    parser.add_argument("--pg", default="postgres://postgres@127.0.0.1:5432", help="server URL")
    parser.add_argument("--db", default="psm_bench")
    parser.add_argument("--mutate", type=float, default=0.01)
    parser.add_argument("--serve-seconds", type=int, default=15)
    parser.add_argument("--serve-workers", type=int, default=2)
    parser.add_argument("--no-serve", action="store_true")
    parser.add_argument(
        "--no-vacuum",
        action="store_true",
        help="do not VACUUM ANALYZE the package table between syncs (as autovacuum would)",
    )
    parser.add_argument(
        "--touch",
        action="store_true",
        help="also re-sync after a new ETag on unchanged content (the parse-and-diff floor)",
    )
    parser.add_argument("--profile", action="store_true", help="cProfile each sync")
    parser.add_argument(
        "--spy", action="store_true", help="py-spy each sync (<workdir>/run-N.spy.txt)"
    )
    parser.add_argument(
        "--only-full", action="store_true", help="the limit and the full sync only (no re-syncs)"
    )
    parser.add_argument(
        "--policy",
        action="store_true",
        help="give the channel a policy (licenses, cooldown, block specs): each sync that "
        "changes something then decides every file (packages_decide)",
    )
    parser.add_argument(
        "--no-jlap",
        action="store_true",
        help="serve no repodata.jlap (gen_conda.py --no-jlap); by default each subdir has one",
    )
    parser.add_argument(
        "--rate",
        type=float,
        help="MB/s the upstream sends each body at, as over a network link (default: as fast "
        "as loopback goes); the limit's fetch is paced too",
    )
    parser.add_argument(
        "--process",
        action="store_true",
        help="run each sync as a `manage.py mirror_run` process (start-up and exit timed); by "
        'default they run in one Celery worker started before them, each queued as by "Run '
        "now\" (production's path). Implied by --profile and --spy",
    )
    parser.add_argument(
        "--from-psm",
        action="store_true",
        help="mirror a PSM channel (itself a mirror of the generated one) served by gunicorn",
    )
    parser.add_argument("--worker", action="store_true", help="the default (kept for old commands)")
    parser.add_argument(
        "--broker",
        default="redis://127.0.0.1:6379/13",
        help="the worker's broker (its queue is purged first)",
    )
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    if args.worker and (args.profile or args.spy or args.process):
        parser.error("--profile, --spy and --process time mirror_run processes: not --worker")
    if args.from_psm and (args.profile or args.spy or args.process):
        parser.error("--from-psm syncs in a worker: not with --profile, --spy or --process")
    in_worker = not (args.process or args.profile or args.spy)
    jlap = not args.no_jlap

    workdir: Path = args.workdir.resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    chan, data = workdir / "chan", workdir / "data"
    for folder in (chan, data):
        shutil.rmtree(folder, ignore_errors=True)
    results: dict = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": " ".join([Path(PYTHON).name, *sys.argv]),
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "memory_gb": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30),
        },
        "records": args.records,
        "jlap": jlap,
        "from_psm": args.from_psm,
        "git": git_describe(),
        "load_at_start": os.getloadavg(),
    }
    if os.getloadavg()[0] > 0.5:
        print(
            f"warning: load average {os.getloadavg()[0]:.1f}: other work competes for the CPUs "
            "and the timings will be too high",
            flush=True,
        )

    if args.source:
        print(f"copying {args.source} to {chan}", flush=True)
        shutil.copytree(args.source, chan)
        import gen_conda  # beside this script, as run

        for subdir in (SUBDIR, "noarch"):  # the log as a generated channel would have it
            gen_conda.keep_log(chan / subdir, jlap)
    else:
        results["generate_s"] = round(generate(chan, args.records, jlap=jlap), 1)
    os.sync()  # the channel's files written out: no writeback under the timed steps
    results["repodata_mb"] = round((chan / SUBDIR / "repodata.json").stat().st_size / 1e6, 1)
    results["repodata_zst_mb"] = round(
        (chan / SUBDIR / "repodata.json.zst").stat().st_size / 1e6, 1
    )

    upstream = make_upstream(chan, args.rate * 1e6 if args.rate else None)
    upstream_url = f"http://127.0.0.1:{upstream.server_address[1]}"
    dsn = f"{args.pg}/{args.db}"
    env = psm_env(dsn, data)
    print(f"fresh database {args.db}; migrating", flush=True)
    fresh_database(args.pg, args.db)
    manage(env, "migrate", "--noinput")
    with psycopg.connect(dsn) as conn:
        results["pg"] = dict(
            conn.execute(
                "SELECT name, setting FROM pg_settings WHERE name IN ('server_version', "
                "'autovacuum', 'shared_buffers', 'synchronous_commit', 'work_mem')"
            ).fetchall()
        )
    origin = None
    if args.from_psm:  # the generated channel is `origin`'s upstream; PSM serves `bench` its
        port = free_port()
        origin = gunicorn(env, workdir / "origin-gunicorn.log", port)
        manage(env, "shell", "-c", ORIGIN.format(url=upstream_url, subdir=SUBDIR))
        upstream_url = f"http://127.0.0.1:{port}/api/repo/origin"
    manage(env, "shell", "-c", SETUP.format(url=upstream_url, subdir=SUBDIR))
    if args.policy:
        manage(env, "shell", "-c", POLICY)
        results["policy"] = POLICY.strip()

    if in_worker:  # the broker checked (and its queue emptied) before anything is timed
        env["CELERY_BROKER_URL"] = args.broker
        try:
            manage(env, "shell", "-c", "from psm.celery import app; app.control.purge()")
        except subprocess.CalledProcessError as exc:
            sys.exit(
                f"no broker at {args.broker} ({exc.stderr.strip().splitlines()[-1]}): "
                "start it, give another with --broker, or time processes with --process"
            )

    worker = None
    if origin is not None:
        print(f"starting a Celery worker ({args.broker}); syncing origin", flush=True)
        worker = Worker(env, workdir)
        results["worker"] = args.broker
        sync_origin(worker, dsn)
        wait_http("127.0.0.1", port, f"/api/repo/origin/{SUBDIR}/repodata.json")

    print("the limit: fetch, parse, COPY and write the index back", flush=True)
    results["limit"] = run_limit(env, dsn, workdir, upstream_url)
    print(f"  {results['limit']['wall_s']} s, peak RSS {results['limit']['peak_rss_mb']} MB")

    if in_worker and worker is None:
        print(f"starting a Celery worker ({args.broker})", flush=True)
        worker = Worker(env, workdir)
        results["worker"] = args.broker

    plan = [("full (empty db)", None), ("unchanged (304)", None)]
    if args.touch:
        plan.append(("same records, new ETag", "touch"))
    plan.append((f"{args.mutate:.0%} changed", "mutate"))
    if args.only_full:
        plan = plan[:1]
    results["syncs"] = []
    for index, (label, before) in enumerate(plan, 1):
        if before == "touch":
            for path in (chan / SUBDIR).iterdir():
                os.utime(path)  # a new mtime is a new ETag: full fetch and parse, no change
        if before == "mutate":
            print(f"mutating {args.mutate:.0%} of the records", flush=True)
            results["mutate_s"] = round(generate(chan, args.records, args.mutate, jlap), 1)
            if origin is not None:
                sync_origin(worker, dsn)
        if before:  # the new files written out first: their writeback is not the sync's
            os.sync()
        print(f"sync {index}: {label}", flush=True)
        run = run_sync(env, dsn, workdir, label, index, args.profile, args.spy, worker)
        print(
            f"  {run['state']} in {run['wall_s']} s, peak RSS {run['peak_rss_mb']} MB", flush=True
        )
        run["x_limit"] = round(run["wall_s"] / results["limit"]["wall_s"], 2)
        if results["syncs"]:  # a re-sync as a share of the full sync
            full = results["syncs"][0]
            run["x_full"] = round(run["wall_s"] / full["wall_s"], 3)
            if run["run_s"] and full["run_s"]:
                run["x_full_run"] = round(run["run_s"] / full["run_s"], 3)
        results["syncs"].append(run)
        if run["exit_code"]:
            print(run.get("output_tail", ""), file=sys.stderr)
            break
        if not args.no_vacuum:
            run["vacuum_analyze_s"] = vacuum_analyze(dsn)

    if worker is not None:
        worker.stop()
    if origin is not None:
        origin.terminate()
        origin.wait(30)
    upstream.shutdown()
    if not args.no_serve and importlib.util.find_spec("gunicorn") is None:
        print("serving skipped: gunicorn is not installed (.venv/bin/pip install gunicorn)")
    elif not args.no_serve and all(r["exit_code"] == 0 for r in results["syncs"]):
        print("serving", flush=True)
        results["serving"] = measure_serving(env, workdir, args.serve_seconds, args.serve_workers)

    out = args.json or workdir / "results.json"
    out.write_text(json.dumps(results, indent=2))
    print_table(results)
    print(f"\nresults: {out}")


if __name__ == "__main__":
    main()
