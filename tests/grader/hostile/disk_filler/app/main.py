"""Fills the disk at import: 8 MiB files in its folder, up to 512 MiB."""

import time
from pathlib import Path

CHUNK = b"x" * (8 << 20)
for number in range(64):
    (Path.cwd() / f"fill-{number}.bin").write_bytes(CHUNK)
    time.sleep(0.02)
raise SystemExit("LEAKED: wrote 512 MiB")
