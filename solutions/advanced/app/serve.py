"""Run the service with several workers: `python -m app.serve` (the Docker image's command).

Each worker is its own process, so Prometheus metrics must be kept in files that a scrape adds up
(multiprocess mode). This prepares that folder, empty, then imports the app once and forks the workers from
it, each serving the same socket: a worker starts in milliseconds instead of importing everything again in a
fresh interpreter (uvicorn's --workers spawns), which was most of the image's start-up. The parent restarts a
worker that dies, and passes SIGTERM and SIGINT on, so that each finishes its requests in flight.
"""

import os
import shutil
import signal
import socket
import sys
import tempfile
import time
import traceback
from pathlib import Path
from types import FrameType

import uvicorn

from .config import get_settings
from .logging_config import configure_logging


def prepare_multiprocess_dir(workers: int) -> None:
    """With more than one worker, point PROMETHEUS_MULTIPROC_DIR at an empty folder (a fresh one if unset)."""
    if workers <= 1 and not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        return
    folder = Path(os.environ.get("PROMETHEUS_MULTIPROC_DIR") or tempfile.mkdtemp(prefix="prometheus-"))
    # Files of a previous run would add stale counts to every scrape.
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True, exist_ok=True)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(folder)


def unwritable_sqlite_folder(database_url: str) -> Path | None:
    """The folder of a SQLite database file that this user cannot create or write there, else None."""
    scheme, _, rest = database_url.partition("://")
    # sqlite:///relative.db and sqlite:////absolute.db: the path follows the third slash.
    path = rest.removeprefix("/").partition("?")[0]
    if not scheme.startswith("sqlite") or path in ("", ":memory:"):
        return None
    folder = Path(path).resolve().parent
    return None if os.access(folder, os.W_OK | os.X_OK) else folder


def main() -> None:
    """Start uvicorn the way the settings say."""
    settings = get_settings()
    if settings.environment == "production" and not settings.secret_key.get_secret_value():
        sys.exit("SECRET_KEY is empty: set it (in the shell or docker/.env for compose) to a long random string")
    folder = unwritable_sqlite_folder(settings.database_url)
    if folder is not None:
        # One line instead of a traceback from every worker (a container's app folder is read-only for its user).
        sys.exit(
            f"DATABASE_URL={settings.database_url} names a SQLite file in {folder}, which this user "
            f"(uid {os.getuid()}) cannot write: set DATABASE_URL to a writable path, for example "
            "sqlite+aiosqlite:////tmp/lab.db, or to a PostgreSQL URL"
        )
    configure_logging(settings)
    prepare_multiprocess_dir(settings.workers)
    from .main import app  # once, here: every worker is a fork of this process

    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        proxy_headers=True,
        access_log=False,  # the app writes its own structured access line
        log_config=None,  # the app routes uvicorn's loggers through structlog
    )
    if settings.workers <= 1:
        uvicorn.Server(config).run()
        return
    sys.exit(supervise(config, config.bind_socket(), settings.workers))


def fork_worker(config: uvicorn.Config, sock: socket.socket) -> int:
    """A child process serving `sock` until it is told to stop; its PID, in the parent."""
    pid = os.fork()
    if pid:
        return pid
    code = 1
    try:
        os.setpgrp()  # a terminal's Ctrl+C reaches the parent alone, which passes it on once
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, signal.SIG_DFL)  # uvicorn installs its own graceful handlers
        uvicorn.Server(config).run(sockets=[sock])
        code = 0
    except BaseException:  # noqa: BLE001 - a worker reports anything, then exits with a status
        traceback.print_exc()
    finally:
        os._exit(code)


def supervise(config: uvicorn.Config, sock: socket.socket, workers: int) -> int:
    """Fork the workers; restart one that dies; on SIGTERM or SIGINT pass it on and wait for them all."""
    stopping: list[int] = []

    def stop(signum: int, _frame: FrameType | None) -> None:
        stopping.append(signum)
        for pid in children:
            os.kill(pid, signum)

    children: set[int] = set()
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    children.update(fork_worker(config, sock) for _ in range(workers))
    drop_own_metric_files()
    status = 0
    while children:
        try:
            pid, wait_status = os.wait()
        except ChildProcessError:
            break
        children.discard(pid)
        status = max(status, os.waitstatus_to_exitcode(wait_status), 0)
        if not stopping:
            time.sleep(1)  # a worker that dies at once must not become a busy loop
            if not stopping:
                children.add(fork_worker(config, sock))
    return 0 if stopping else status


def drop_own_metric_files() -> None:
    """The parent serves nothing: the metric files its import made would add a silent process to every scrape."""
    folder = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if folder:
        for file in Path(folder).glob(f"*_{os.getpid()}.db"):
            file.unlink(missing_ok=True)


if __name__ == "__main__":
    main()
