"""Run the service with several workers: `python -m app.serve` (the Docker image's command).

uvicorn's --workers gives each worker its own process, so Prometheus metrics must be kept in files that a
scrape adds up (multiprocess mode). This prepares that folder, empty, before any worker starts, then runs
uvicorn with HOST, PORT and WORKERS from the settings.
"""

import os
import shutil
import sys
import tempfile
from pathlib import Path

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
    uvicorn.run(
        "app.main:app",
        host=settings.host,
        port=settings.port,
        workers=settings.workers,
        proxy_headers=True,
        access_log=False,  # the app writes its own structured access line
        log_config=None,  # the app routes uvicorn's loggers through structlog
    )


if __name__ == "__main__":
    main()
