"""Run the service with several workers: `python -m app.serve` (the Docker image's command).

uvicorn's --workers gives each worker its own process, so Prometheus metrics must be kept in files that a
scrape adds up (multiprocess mode). This prepares that folder, empty, before any worker starts, then runs
uvicorn with HOST, PORT and WORKERS from the settings.
"""

import os
import shutil
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


def main() -> None:
    """Start uvicorn the way the settings say."""
    settings = get_settings()
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
