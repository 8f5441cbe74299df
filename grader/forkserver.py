"""A stage's fork server: imports the libraries the stage's code imports once, then forks each start from that.

A stage's start spends most of its time importing its libraries (LangChain, LangGraph, FastAPI, ...), the same
ones for every profile. This process, started in the stage folder by the grader (`runner.ForkServer`), imports
them once, without importing anything of the stage's own (`app`), and then, for each start asked on its stdin,
forks a child that takes the start's environment, log files and a listening socket of its own, and runs
`uvicorn app.main:app --fd N` there as `python -m uvicorn` would. The stage's code is imported in that child
only, with its own settings, as in a cold start.

Stdlib only: it runs on the stage's interpreter. Protocol, one JSON object a line: a request
`{"env": {...}, "stdout": path, "stderr": path}` is answered `{"pid": n, "port": p}` (or `{"error": text}`);
`{"exited": pid, "code": c}` is written when a child ends (c is -N for a signal, as Popen's returncode).
"""

from __future__ import annotations

import ast
import importlib
import json
import os
import runpy
import select
import signal
import socket
import sys
import threading
from pathlib import Path
from typing import Any, NoReturn

HOST = "127.0.0.1"
BACKLOG = 2048
SOURCES = ("app", "migrations")  # where the stage's own imports are read (never a locustfile: gevent patches)
MAX_FILES = 500
NEVER = frozenset({"app", "gevent", "locust", "grpc"})  # patch the process, or start threads at import
ALWAYS = ("uvicorn.main", "uvicorn.config", "uvicorn.server")


def imported_libraries(stage: Path) -> list[str]:
    """The absolute imports (module paths) that the stage's own files make, except of its own modules."""
    own = {path.stem for path in stage.iterdir()} if stage.is_dir() else set()
    names: dict[str, None] = {}
    files = [path for folder in SOURCES for path in sorted((stage / folder).rglob("*.py"))][:MAX_FILES]
    for path in files:
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"))
        except (OSError, SyntaxError, UnicodeDecodeError, ValueError):
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                found = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                found = [node.module]
            else:
                continue
            for name in found:
                top = name.split(".", 1)[0]
                if top not in own and top not in NEVER and top != "__future__":
                    names[name] = None
    return list(names)


def preload(stage: Path) -> bool:
    """Import the stage's libraries; False when that left the process unfit to fork (a thread was started)."""
    for name in (*ALWAYS, *imported_libraries(stage)):
        try:
            importlib.import_module(name)
        except BaseException:  # noqa: BLE001, S112 - a library that fails here fails in the child, as in a cold start
            continue
    return threading.active_count() == 1 and not any(name in sys.modules for name in NEVER)


_ANSWERS = [1]  # the fd the answers go to: stdout's pipe, moved away from fd 1 so that nothing printed mixes in


def _write(message: dict[str, Any]) -> None:
    os.write(_ANSWERS[0], (json.dumps(message) + "\n").encode())


def _child(request: dict[str, Any], listener: socket.socket) -> NoReturn:
    """In the forked child: become the stage's server process. Never returns to the fork server's loop."""
    signal.signal(signal.SIGINT, signal.default_int_handler)
    os.close(_ANSWERS[0])
    for name, fd in (("stdout", 1), ("stderr", 2)):
        target = os.open(request[name], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.dup2(target, fd)
        os.close(target)
    null = os.open(os.devnull, os.O_RDONLY)  # instead of the fork server's requests on fd 0
    os.dup2(null, 0)
    if null != 0:
        os.close(null)
    os.environ.clear()
    os.environ.update(request["env"])
    sys.argv = ["uvicorn", "app.main:app", "--fd", str(listener.fileno())]
    # What `python -m uvicorn` runs; its exit (SystemExit) ends this process the ordinary way, atexit included.
    runpy.run_module("uvicorn", run_name="__main__", alter_sys=True)
    sys.exit(0)


def _reap(children: set[int]) -> None:
    for pid in list(children):
        try:
            done, status = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            done, status = pid, 0
        if done:
            children.discard(pid)
            code = -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)
            _write({"exited": pid, "code": code})


def serve(stage: Path) -> None:
    """Preload, say whether forking is safe, then start a child per request until stdin closes."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl+C is the grader's to handle: it stops every start
    _ANSWERS[0] = os.dup(1)
    null = os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, 1)  # what a library prints at import goes nowhere, as the answers must stay JSON
    os.close(null)
    safe = preload(stage)
    _write({"ready": True, "safe": safe})
    channel = sys.stdin.fileno()
    children: set[int] = set()
    pending = b""
    while True:
        readable, _, _ = select.select([channel], [], [], 0.05)
        _reap(children)
        if not readable:
            continue
        chunk = os.read(channel, 1 << 16)
        if not chunk:
            break
        pending += chunk
        while b"\n" in pending:
            line, pending = pending.split(b"\n", 1)
            request = json.loads(line)
            if not safe:
                _write({"error": "the stage's libraries started a thread at import: cannot fork"})
                continue
            listener = socket.socket()
            try:
                listener.bind((HOST, 0))
                listener.listen(BACKLOG)
            except OSError as error:
                listener.close()
                _write({"error": f"no listening socket: {error}"})
                continue
            port = listener.getsockname()[1]
            sys.stdout.flush()
            sys.stderr.flush()
            pid = os.fork()
            if pid == 0:
                _child(request, listener)
            listener.close()
            children.add(pid)
            _write({"pid": pid, "port": port})
    for pid in children:  # the grader stops each start; these are left over from an interrupted grade
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            continue
    for pid in list(children):
        try:
            os.waitpid(pid, 0)
        except ChildProcessError:
            continue


if __name__ == "__main__":
    serve(Path.cwd())
