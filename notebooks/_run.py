"""Runs the notebooks top to bottom with nbclient; the executed copies, outputs included, go to build/notebooks/."""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

import nbformat
from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import AsyncKernelManager
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError, CellTimeoutError, DeadKernelError
from nbformat import NotebookNode

NOTEBOOKS = Path(__file__).resolve().parent
BUILD = NOTEBOOKS.parent / "build" / "notebooks"
CELL_TIMEOUT = 120  # seconds; only a hung cell comes near it


def notebooks() -> list[Path]:
    """Every notebook of the folder, in order."""
    return sorted(NOTEBOOKS.glob("*.ipynb"))


def read(notebook: Path) -> NotebookNode:
    """A notebook file, as nbformat version 4."""
    nb: NotebookNode = nbformat.read(notebook, as_version=4)  # type: ignore[no-untyped-call]  # nbformat is unannotated
    return nb


def execute(notebook: Path, out_dir: Path = BUILD, *, cell_timeout: int = CELL_TIMEOUT) -> NotebookNode:
    """Run the notebook in a fresh kernel from its own folder and write the executed copy to `out_dir`.

    The copy is written even when a cell fails (CellExecutionError), so its error can be read in place.
    """
    nb = read(notebook)
    with tempfile.TemporaryDirectory(prefix="kernel-") as sockets:
        client = NotebookClient(
            nb,
            km=_this_interpreters_kernel(Path(sockets)),
            timeout=cell_timeout,
            resources={"metadata": {"path": str(notebook.parent)}},
        )
        try:
            client.execute(cleanup_kc=True)
        finally:
            out_dir.mkdir(parents=True, exist_ok=True)
            nbformat.write(nb, out_dir / notebook.name)  # type: ignore[no-untyped-call]  # as above
    return nb


def _this_interpreters_kernel(sockets: Path) -> AsyncKernelManager:
    """The `python3` kernel as this interpreter's ipykernel, never a kernelspec installed elsewhere on the machine.

    With no kernel folders to search, jupyter_client falls back to ipykernel's native spec, which runs
    `sys.executable`: the notebooks see exactly the packages of the environment that runs them. Where the system
    has Unix sockets, the kernel talks over them, in the folder `sockets`, rather than over TCP ports on localhost
    (which ipykernel warns about, as unencrypted).
    """
    # An absolute path: the kernel runs in the notebook's folder, and would not find a relative one.
    ipc = {"transport": "ipc", "ip": str(sockets / "ipc")} if os.name == "posix" else {}
    return AsyncKernelManager(kernel_name="python3", kernel_spec_manager=KernelSpecManager(kernel_dirs=[]), **ipc)


def main(names: list[str]) -> int:
    """`python notebooks/_run.py [NOTEBOOK ...]`: run those (default: all), report times; 1 if a cell failed."""
    paths = [Path(name).resolve() for name in names] or notebooks()
    failed = []
    for path in paths:
        started = time.perf_counter()
        try:
            execute(path)
        except (CellExecutionError, CellTimeoutError, DeadKernelError) as error:
            failed.append(path.name)
            print(f"FAILED {path.name} after {time.perf_counter() - started:.1f} s:\n{error}", file=sys.stderr)
        else:
            print(f"ok     {path.name} in {time.perf_counter() - started:.1f} s -> {BUILD / path.name}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
