"""Serving side by side: PSM (one or more servers), nginx and proxpi on the same bytes, one run.

    .venv/bin/python benchmarks/bench_serving.py [--servers psm-server,gunicorn-gthread]
        [--seconds 10] [--connections 16] [--workdir /tmp/psm-bench-serving]
        [--pg postgres://postgres@127.0.0.1:5432] [--db psm_bench_serving] [--no-nginx]
        [--no-proxpi] [--json FILE]

What it does, in order:

1. Upstreams on 127.0.0.1 (the test fixtures' real builders): a conda channel (200 packages
   in linux-64, so repodata.json is about 100 KB) and a simple index of one Python project
   `alpha` with 40 releases, one of them a 2 MB wheel (the package file measured).
2. PSM: drops and creates `--db`, migrates, mirrors both upstreams in active mode
   (`manage.py mirror_run`), so every byte served is PSM's own.
3. nginx (Debian `nginx-light`, installed with apt-get when missing and this runs as root,
   else skipped with a note) serves static copies of exactly the bytes PSM serves, with its
   own ETags.
4. proxpi (pip-installed into a throwaway venv under the workdir) proxies the same simple
   index under gunicorn with 2 workers (its documented way to run); its cache is warmed first.
5. Each PSM server in `--servers` in turn (2 workers each; `psm-server` is the documented
   production server, `python -m psm.server`), then nginx and proxpi, answer
   the cases below under wrk (else a threaded Python client) on the same 2 cores:
   304 of repodata.json (If-None-Match), 304 of the project page, the project page (200,
   warm), repodata.json (200), the project list (200) and the 2 MB wheel.

Prints req/s per server and case with the PSM/nginx and PSM/proxpi ratios, and writes JSON.
Asserts nothing: the figures are for benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import io
import json
import os
import random
import shutil
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import psycopg

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.bench_conda import free_port, git_describe, load_python, load_wrk  # noqa: E402
from tests.fixtures.conda_channel import ChannelServer, FakePackage, build_channel  # noqa: E402
from tests.fixtures.pypi_index import FakeDist, IndexServer, build_index  # noqa: E402

PYTHON = sys.executable
BIN = Path(PYTHON).parent
HTML = "text/html"

#: PSM under each candidate server: 2 workers (one per core), listening on {port}.
SERVERS: dict[str, list[str]] = {
    "gunicorn-sync": [PYTHON, "-m", "gunicorn", "psm.wsgi", "-w", "2"],
    "gunicorn-gthread": [PYTHON, "-m", "gunicorn", "psm.wsgi", "-w", "2", "-k", "gthread"]
    + ["--threads", "4"],
    "gunicorn-gevent": [PYTHON, "-m", "gunicorn", "psm.wsgi", "-w", "2", "-k", "gevent"],
    "granian-wsgi": [str(BIN / "granian"), "--interface", "wsgi", "psm.wsgi:application"]
    + ["--workers", "2", "--blocking-threads", "4", "--no-ws", "--log-level", "warning"],
    # Each worker loads the application (--lazy-apps): the cache's listener thread would not
    # survive a fork from the master.
    "uwsgi": [str(BIN / "uwsgi"), "--module", "psm.wsgi:application", "--master", "--lazy-apps"]
    + ["--processes", "2", "--threads", "4", "--enable-threads", "--disable-logging"]
    + ["--die-on-term", "--buffer-size", "16384"],
}


def server_command(name: str, port: int) -> list[str]:
    command = list(SERVERS.get(name, ()))
    if name.startswith("gunicorn"):
        return command + ["-b", f"127.0.0.1:{port}", "--log-level", "warning"]
    if name == "psm-server":  # the production server, started as the README starts it
        bind = f"PSM_BIND=127.0.0.1:{port}"
        return ["env", bind, "PSM_WEB_WORKERS=2", PYTHON, "-m", "psm.server"]
    if name == "uwsgi":
        return command + ["--http-socket", f"127.0.0.1:{port}"]
    return command + ["--host", "127.0.0.1", "--port", str(port)]


# --- upstreams and PSM ------------------------------------------------------------------------


def build_upstreams(workdir: Path) -> tuple[Path, Path, str]:
    """The conda channel, the simple index and the big wheel's file name."""
    conda = workdir / "upstream-conda"
    if not (conda / "linux-64" / "repodata.json").exists():
        packages = [
            FakePackage(f"pkg{i % 40:02d}", f"1.{i // 40}", subdir="linux-64", depends=["python"])
            for i in range(200)
        ]
        build_channel(conda, packages)
    index = workdir / "upstream-pypi"
    big = FakeDist("alpha", "9.0", files={"alpha/blob.bin": random.randbytes(2 * 1024 * 1024)})
    if not (index / "simple" / "alpha" / "index.html").exists():
        dists = [FakeDist("alpha", f"1.{i}") for i in range(39)] + [big]
        build_index(index, dists)
    return conda, index, big.filename


SETUP = """
from channels_app.models import Channel
from mirrors_app.models import Mirror
for kind, url, options in ((\"conda\", {conda!r}, {{\"subdirs\": [\"linux-64\"]}}),
                           (\"pypi\", {pypi!r}, {{\"projects\": [\"alpha\"]}})):
    channel = Channel.objects.create(name=f\"bench-{{kind}}\", kind=kind)
    Mirror.objects.create(channel=channel, name=f\"bench-{{kind}}\", mode=\"active\", kind=kind,
                          source_url=url, options=options, cron=\"0 0 1 1 *\")
"""


def prepare_psm(env: dict, conda_url: str, pypi_url: str) -> None:
    manage = [PYTHON, str(ROOT / "manage.py")]
    subprocess.run(manage + ["migrate", "--noinput", "-v0"], env=env, cwd=ROOT, check=True)
    setup = SETUP.format(conda=conda_url, pypi=pypi_url)
    subprocess.run(manage + ["shell", "-c", setup], env=env, cwd=ROOT, check=True)
    for name in ("bench-conda", "bench-pypi"):
        subprocess.run(manage + ["mirror_run", name], env=env, cwd=ROOT, check=True)


def fetch(port: int, path: str, headers: dict[str, str] | None = None) -> tuple[int, dict, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    conn.request("GET", path, headers=headers or {})
    response = conn.getresponse()
    body = response.read()
    conn.close()
    return response.status, {k.lower(): v for k, v in response.getheaders()}, body


def wait_port(port: int, path: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            fetch(port, path)
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


class Process:
    """A server in its own process group, stopped (with its workers) on exit."""

    def __init__(self, command: list[str], env: dict, log: Path, cwd: Path = ROOT) -> None:
        self.log = open(log, "w")
        self.process = subprocess.Popen(
            command, env=env, cwd=cwd, stdout=self.log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip

    def __enter__(self) -> Process:
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            os.killpg(self.process.pid, 15)
            self.process.wait(30)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            os.killpg(self.process.pid, 9)
        self.log.close()


# --- cases ------------------------------------------------------------------------------------

#: (case, path at PSM relative to /api/repo/, nginx path, proxpi path, conditional)
CASES = [
    ("304 repodata.json", "bench-conda/linux-64/repodata.json", True),
    ("304 project page", "bench-pypi/simple/alpha/", True),
    ("project page 200 (warm)", "bench-pypi/simple/alpha/", False),
    ("repodata.json 200", "bench-conda/linux-64/repodata.json", False),
    ("project list 200", "bench-pypi/simple/", False),
    ("package file 200 (2 MB wheel)", "bench-pypi/files/alpha/{wheel}", False),
]
PROXPI_PATHS = {
    "bench-pypi/simple/alpha/": "/index/alpha/",
    "bench-pypi/simple/": "/index/",
    "bench-pypi/files/alpha/{wheel}": "/index/alpha/{wheel}",
}


def measure(port: int, path: str, conditional: bool, args, label: str) -> dict:
    """req/s of GET `path` (with the ETag it answers, for the 304 cases)."""
    headers = {"Accept": HTML}
    status, answer, body = fetch(port, path, headers)
    if status != 200:
        return {"skipped": f"GET {path} answered {status}"}
    if conditional:
        # A server that sends no ETag answers the client's conditional GET with a 200.
        headers["If-None-Match"] = answer.get("etag", '"none"')
        status = fetch(port, path, headers)[0]
    small = len(body) < 1_000_000
    connections = args.connections if small else 4
    load = load_wrk if shutil.which("wrk") else load_python
    result = load(f"http://127.0.0.1:{port}{path}", connections, args.seconds, headers)
    result |= {"connections": connections, "bytes": len(body), "status": status}
    print(f"  {label:<18} {result['requests_per_s']:>10} req/s  {path}", flush=True)
    return result


def run_cases(port: int, paths: dict[str, str | None], args, label: str) -> dict:
    """Every case, each after one untimed second of the same load: every server starts warm
    (its threads' database connections, caches and the first requests' imports done)."""
    results = {}
    warm = argparse.Namespace(**{**vars(args), "seconds": 1})
    for case, _psm_path, conditional in CASES:
        if paths.get(case):
            with contextlib.redirect_stdout(io.StringIO()):
                measure(port, paths[case], conditional, warm, label)
        path = paths.get(case)
        results[case] = (
            measure(port, path, conditional, args, label) if path else {"skipped": "n/a"}
        )
    return results


# --- nginx and proxpi -------------------------------------------------------------------------

NGINX_CONF = """
daemon off;
worker_processes 2;
user root;
pid {work}/nginx.pid;
error_log {work}/nginx-error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    sendfile on;
    tcp_nopush on;
    keepalive_requests 100000;
    types {{ application/json json; text/html html; application/octet-stream whl; }}
    server {{
        listen 127.0.0.1:{port};
        root {work}/static;
        index index.html;
    }}
}}
"""


def nginx_binary() -> str | None:
    found = shutil.which("nginx") or (os.path.exists("/usr/sbin/nginx") and "/usr/sbin/nginx")
    if found or os.geteuid() != 0 or not shutil.which("apt-get"):
        return found or None
    print("installing nginx-light with apt-get", flush=True)
    subprocess.run(["apt-get", "install", "-y", "-qq", "nginx-light"], check=False)
    return shutil.which("nginx") or (os.path.exists("/usr/sbin/nginx") and "/usr/sbin/nginx")


def copy_static(port: int, workdir: Path, wheel: str) -> dict[str, str]:
    """Write the bytes PSM serves for each case under `static/`; nginx's path per case."""
    paths = {}
    for case, path, _ in CASES:
        path = path.format(wheel=wheel)
        body = fetch(port, f"/api/repo/{path}", {"Accept": HTML})[2]
        target = workdir / "static" / (path + "index.html" if path.endswith("/") else path)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(body)
        paths[case] = "/" + path
    return paths


def proxpi_venv(workdir: Path) -> Path:
    venv = workdir / "proxpi-venv"
    if not (venv / "bin" / "gunicorn").exists():
        clean = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
        subprocess.run([PYTHON, "-m", "venv", str(venv)], check=True, env=clean)
        pip = [str(venv / "bin" / "pip"), "install", "-q", "proxpi", "gunicorn"]
        subprocess.run(pip, check=True, env=clean)
    return venv


# --- driver -----------------------------------------------------------------------------------


def ratio(a: float | None, b: float | None) -> str:
    return f"{a / b:.2f}" if a and b else "-"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--servers", default="psm-server,gunicorn-gthread")
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/psm-bench-serving"))
    parser.add_argument("--pg", default="postgres://postgres@127.0.0.1:5432")
    parser.add_argument("--db", default="psm_bench_serving")
    parser.add_argument("--no-nginx", action="store_true")
    parser.add_argument("--no-proxpi", action="store_true")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    servers = [s.strip() for s in args.servers.split(",") if s.strip()]
    unknown = [s for s in servers if s not in SERVERS and s != "psm-server"]
    if unknown:
        parser.error(f"unknown server(s) {unknown}; known: psm-server, {', '.join(SERVERS)}")
    if args.db in ("psm", "test_psm"):
        parser.error("use a database of its own")
    work = args.workdir.resolve()
    shutil.rmtree(work / "data", ignore_errors=True)
    shutil.rmtree(work / "static", ignore_errors=True)
    shutil.rmtree(work / "proxpi-cache", ignore_errors=True)
    work.mkdir(parents=True, exist_ok=True)

    with psycopg.connect(f"{args.pg}/postgres", autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{args.db}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{args.db}"')
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PSM_", "DATABASE_URL"))}
    env |= {
        "DATABASE_URL": f"{args.pg}/{args.db}",
        "PSM_DATA_DIR": str(work / "data"),
        "PSM_UPSTREAM_ALLOWLIST": "127.0.0.1",
        "PYTHONPATH": str(ROOT),
    }
    conda_dir, index_dir, wheel = build_upstreams(work)
    results: dict = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "commit": git_describe(),
        "load_before": os.getloadavg(),
        "seconds": args.seconds,
        "servers": {},
    }
    psm_paths = {case: f"/api/repo/{p.format(wheel=wheel)}" for case, p, _ in CASES}
    with ChannelServer(conda_dir) as conda, IndexServer(index_dir) as pypi:
        prepare_psm(env, conda.url, pypi.index_url)
        nginx_paths = None
        for name in servers:
            port = free_port()
            with Process(server_command(name, port), env, work / f"{name}.log"):
                wait_port(port, psm_paths["project list 200"])
                if nginx_paths is None:
                    nginx_paths = copy_static(port, work, wheel)
                print(f"PSM under {name}:", flush=True)
                results["servers"][f"psm {name}"] = run_cases(port, psm_paths, args, name)

        nginx = None if args.no_nginx else nginx_binary()
        if nginx and nginx_paths:
            port = free_port()
            (work / "nginx.conf").write_text(NGINX_CONF.format(work=work, port=port))
            command = [nginx, "-c", str(work / "nginx.conf"), "-p", str(work)]
            with Process(command, env, work / "nginx.log"):
                wait_port(port, nginx_paths["project list 200"])
                print("nginx:", flush=True)
                results["servers"]["nginx"] = run_cases(port, nginx_paths, args, "nginx")
        elif not args.no_nginx:
            results["notes"] = ["nginx skipped: not installed (apt-get install nginx-light)"]

        if not args.no_proxpi:
            venv = proxpi_venv(work)
            port = free_port()
            proxpi_env = env | {
                "PROXPI_INDEX_URL": pypi.index_url,
                "PROXPI_CACHE_DIR": str(work / "proxpi-cache"),
            }
            command = [str(venv / "bin" / "gunicorn"), "proxpi.server:app", "-w", "2"]
            command += ["-b", f"127.0.0.1:{port}", "--log-level", "warning"]
            paths = {
                case: PROXPI_PATHS[psm].format(wheel=wheel)
                for case, psm, _ in CASES
                if psm in PROXPI_PATHS
            }
            with Process(command, proxpi_env, work / "proxpi.log", cwd=work):
                wait_port(port, "/index/")
                for path in paths.values():  # warm both workers' caches
                    for _ in range(4):
                        fetch(port, path, {"Accept": HTML})
                print("proxpi:", flush=True)
                results["servers"]["proxpi"] = run_cases(port, paths, args, "proxpi")
    results["load_after"] = os.getloadavg()

    print()
    names = list(results["servers"])
    print(f"{'case':<32}" + "".join(f"{n:>22}" for n in names))
    rates = {
        n: {c: results["servers"][n][c].get("requests_per_s") for c, _, _ in CASES} for n in names
    }
    for case, _, _ in CASES:
        print(f"{case:<32}" + "".join(f"{rates[n][case] or '-':>22}" for n in names))
    print()
    for name in (n for n in names if n.startswith("psm ")):
        for case, _, _ in CASES:
            psm = rates[name][case]
            nginx_rate = rates.get("nginx", {}).get(case)
            proxpi_rate = rates.get("proxpi", {}).get(case)
            print(
                f"{name:<22} {case:<32} PSM/nginx {ratio(psm, nginx_rate):>6}"
                f"   PSM/proxpi {ratio(psm, proxpi_rate):>6}"
            )
    out = args.json or work / "results.json"
    out.write_text(json.dumps(results, indent=2))
    print(f"\nload average before {results['load_before']}, after {results['load_after']}")
    print(f"figures written to {out}")


if __name__ == "__main__":
    main()
