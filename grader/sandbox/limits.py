"""The limits each start of a stage runs under, and the sentence a student reads when one is broken."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, fields, replace

GiB, MiB = 1 << 30, 1 << 20
# Overrides, for a course that needs more or a test that needs less: "memory=256M,processes=64,disk=64M".
VARIABLE = "GRADER_LIMITS"


@dataclass(frozen=True)
class Limits:
    memory: int = GiB  # the control group's memory (resident and page cache), where there is one
    address_space: int = 4 * GiB  # RLIMIT_AS: virtual, so well above `memory` (the advanced lab's: ~1.2 GiB)
    processes: int = 512  # the pids control group, and RLIMIT_NPROC for the stage's own user
    open_files: int = 1024
    file_size: int = 256 * MiB
    disk: int = GiB  # everything written in its folders, watched while it runs
    cpu_seconds: int = 600
    lifetime_seconds: int = 1800  # wall clock of one start, whatever the checks' own timeouts


def _amount(text: str) -> int:
    match = re.fullmatch(r"\s*(\d+)\s*([KMG]?)i?B?\s*", text, re.IGNORECASE)
    if not match:
        raise ValueError(f"{VARIABLE}: not an amount: {text!r}")
    return int(match[1]) << {"": 0, "K": 10, "M": 20, "G": 30}[match[2].upper()]


def current() -> Limits:
    """The default limits, with those named in GRADER_LIMITS replaced."""
    names = {field.name for field in fields(Limits)}
    changes: dict[str, int] = {}
    for item in filter(None, os.environ.get(VARIABLE, "").split(",")):
        name, _, value = item.partition("=")
        if name.strip() not in names:
            raise ValueError(f"{VARIABLE}: no limit called {name.strip()!r} (one of {', '.join(sorted(names))})")
        changes[name.strip()] = _amount(value)
    return replace(Limits(), **changes)


def size(amount: int) -> str:
    for unit, shift in (("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if amount >= 1 << shift and amount % (1 << shift) == 0:
            return f"{amount >> shift} {unit}"
    return f"{amount} bytes"


def memory(limits: Limits) -> str:
    return f"the service used more than {size(limits.memory)} of memory"


def address_space(limits: Limits) -> str:
    return f"the service ran out of memory (its limit: {size(limits.address_space)} of address space)"


def processes(limits: Limits) -> str:
    return f"the service tried to run more than {limits.processes} processes and threads"


def open_files(limits: Limits) -> str:
    return f"the service opened more than {limits.open_files} files at once"


def file_size(limits: Limits) -> str:
    return f"the service wrote a file larger than {size(limits.file_size)}"


def disk(limits: Limits) -> str:
    return f"the service wrote more than {size(limits.disk)} to disk"


def cpu(limits: Limits) -> str:
    return f"the service used more than {limits.cpu_seconds} s of CPU time"


def lifetime(limits: Limits) -> str:
    return f"the service ran for more than {limits.lifetime_seconds} s"
