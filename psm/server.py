"""The production web server: `python -m psm.server` (installed by `pip install 'psm[server]'`).

uWSGI, an application server written in C, runs `psm.wsgi` in one process per core, each with a
few threads for requests that wait (a passive first request on its upstream, a large file on a
slow client), sends stored files with `sendfile(2)` and serves the admin's static files itself.
Chosen by measurement (`benchmarks/bench_serving.py`, figures in benchmarks/README.md): on a
quiet machine it answers the small responses that make most of a mirror's traffic (304s, index
files, project pages) about twice as fast as gunicorn's threaded workers, and package files
faster; granian, as fast on small responses, sends package files at 0.6 times gunicorn's rate.
Each connection is closed after its response: uWSGI's keep-alive (`--http11-socket`) holds a
thread per idle connection, so a few clients' idle pools would stall everyone else's requests
for seconds (measured in benchmarks/README.md).

Settings (environment): PSM_BIND (`127.0.0.1:8000`), PSM_WEB_WORKERS (the number of cores),
PSM_WEB_THREADS (8 per worker); the rest of PSM's settings as for any other command.
"""

from __future__ import annotations

import os
import sys


def _address(bind: str) -> tuple[str, str]:
    host, sep, port = bind.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise SystemExit(f"PSM_BIND must be HOST:PORT (such as 0.0.0.0:8000), not {bind!r}")
    return host.strip("[]"), port


def command(bind: str, *, workers: int, threads: int, static_root: str | None = None) -> list[str]:
    """The server's command line: `bind` is HOST:PORT."""
    host, port = _address(bind)
    uwsgi = os.path.join(os.path.dirname(sys.executable), "uwsgi")
    args = [uwsgi if os.path.exists(uwsgi) else "uwsgi", "--strict", "--master"]
    address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    args += ["--module", "psm.wsgi:application", "--need-app", "--http-socket", address]
    # Each worker loads the application itself: the index cache's listening thread would not
    # survive the fork of a master that had loaded it.
    args += ["--lazy-apps", "--processes", str(workers), "--threads", str(threads)]
    args += ["--enable-threads", "--die-on-term", "--vacuum", "--disable-logging"]
    args += ["--buffer-size", "32768"]  # request headers: long tokens and cookies
    if static_root:
        args += ["--static-map", f"/static={static_root}"]
    return args


def main() -> None:
    from django.conf import settings

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "psm.settings")
    bind = os.environ.get("PSM_BIND", "127.0.0.1:8000")
    workers, threads = settings.PSM_WEB_WORKERS, settings.PSM_WEB_THREADS
    static_root = str(settings.STATIC_ROOT) if os.path.isdir(settings.STATIC_ROOT) else None
    args = command(bind, workers=workers, threads=threads, static_root=static_root)
    os.execvp(args[0], args)


if __name__ == "__main__":
    main()
