"""A fork bomb at import: children that sleep, until a fork is refused (or 300 of them, whatever comes first)."""

import json
import os
import sys
from pathlib import Path

TARGETS = json.loads(Path(__file__).with_name("targets.json").read_text())
SLEEPER = [sys.executable, "-S", "-c", "import time; time.sleep(300)", TARGETS["token"]]

for forked in range(300):
    try:
        pid = os.fork()
    except OSError as error:
        raise SystemExit(f"fork refused after {forked} children: {error}") from None
    if pid == 0:
        os.execv(SLEEPER[0], SLEEPER)  # noqa: S606
raise SystemExit("LEAKED: 300 children forked without a refusal")
