"""The first process of a stage's sandbox: drops to the stage's user, relays the grader's services, runs the stage.

Started by bubblewrap as the sandbox's PID 1 (`--as-pid-1`), so that when it exits the kernel ends every other
process of the stage. Stdlib only: it runs on the stage's interpreter with `-I -S`, and is also imported by the
grader for `Relay`, the one forwarder both ends use. Its one argument is a JSON object:
`{"user": [uid, gid] | null, "outbound": [[port, unix_path]], "inbound": [[port, unix_path]], "argv": [...],
"pass_fds": [...]}`. An `outbound` port is one of the grader's services: a connection to 127.0.0.1:port inside
the sandbox is carried over the Unix socket the grader serves. An `inbound` port is where the stage itself
listens (an image's own command): a connection to the Unix socket reaches 127.0.0.1:port inside.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Callable

HOST = "127.0.0.1"
CHUNK = 1 << 16
PR_SET_PDEATHSIG = 1


def _pump(source: socket.socket, target: socket.socket) -> None:
    try:
        while data := source.recv(CHUNK):
            target.sendall(data)
    except OSError:
        pass
    finally:
        with contextlib.suppress(OSError):
            target.shutdown(socket.SHUT_WR)


def _join(accepted: socket.socket, connect: Callable[[], socket.socket]) -> None:
    """Carry one connection both ways; a target that refuses closes the accepted connection at once."""
    try:
        other = connect()
    except OSError:
        accepted.close()
        return
    back = threading.Thread(target=_pump, args=(other, accepted), daemon=True)
    back.start()
    _pump(accepted, other)
    back.join()
    accepted.close()
    other.close()


class Relay:
    """Accept on `listener` and carry each connection to a new socket from `connect`, until `close`."""

    def __init__(self, listener: socket.socket, connect: Callable[[], socket.socket]) -> None:
        self.listener, self.connect = listener, connect
        self.thread = threading.Thread(target=self._accept, name="sandbox-relay", daemon=True)
        self.thread.start()

    def _accept(self) -> None:
        while True:
            try:
                accepted, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=_join, args=(accepted, self.connect), daemon=True).start()

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.listener.shutdown(socket.SHUT_RDWR)
        self.listener.close()


def tcp_listener(port: int) -> socket.socket:
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((HOST, port))
    sock.listen(256)
    return sock


def unix_listener(path: str) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(path)
    sock.listen(256)
    return sock


def tcp_to(port: int) -> Callable[[], socket.socket]:
    return lambda: socket.create_connection((HOST, port), timeout=10)


def unix_to(path: str) -> Callable[[], socket.socket]:
    def connect() -> socket.socket:
        sock = socket.socket(socket.AF_UNIX)
        try:
            sock.connect(path)
        except OSError:
            sock.close()
            raise
        return sock

    return connect


def _drop_to(uid: int, gid: int) -> None:
    os.setgroups([])
    os.setresgid(gid, gid, gid)
    os.setresuid(uid, uid, uid)
    # A change of user clears bwrap's --die-with-parent for this process: ask again to be killed with bwrap.
    with contextlib.suppress(OSError, AttributeError):
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def _exit_status(status: int) -> int:
    """A shell's convention (128 + N for signal N): PID 1 cannot kill itself with the child's signal."""
    return 128 + os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)


def main(spec: dict[str, object]) -> int:
    # First of all: as PID 1 it gets only the signals it handles, so one that comes before the stage is running
    # is kept, and passed on as soon as it is.
    pending: list[int] = []
    child: subprocess.Popen[bytes] | None = None

    def forward(signum: int, _frame: object) -> None:
        if child is None:
            pending.append(signum)
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(child.pid, signum)

    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, forward)
    user = spec.get("user")
    if isinstance(user, list):
        _drop_to(int(user[0]), int(user[1]))
    outbound = spec.get("outbound", [])
    inbound = spec.get("inbound", [])
    assert isinstance(outbound, list) and isinstance(inbound, list)
    relays = [Relay(tcp_listener(int(port)), unix_to(str(path))) for port, path in outbound]
    relays += [Relay(unix_listener(str(path)), tcp_to(int(port))) for port, path in inbound]
    argv = spec["argv"]
    fds = spec.get("pass_fds", [])
    assert isinstance(argv, list) and isinstance(fds, list)
    child = subprocess.Popen([str(arg) for arg in argv], pass_fds=[int(fd) for fd in fds])  # noqa: S603
    for early in pending:
        os.kill(child.pid, early)
    while True:  # PID 1 reaps every orphan; the stage's own process ends the sandbox
        try:
            pid, status = os.waitpid(-1, 0)
        except ChildProcessError:
            return 0
        except InterruptedError:
            continue
        if pid == child.pid:
            for relay in relays:
                relay.close()
            return _exit_status(status)


if __name__ == "__main__":
    sys.exit(main(json.loads(sys.argv[1])))
