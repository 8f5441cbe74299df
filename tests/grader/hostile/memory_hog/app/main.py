"""Allocates memory at import, 64 MiB at a time, up to 4 GiB, each page written so that it is really used."""

import time

CHUNK = 64 << 20
hoard = []
for _ in range(64):
    hoard.append(b"x" * CHUNK)
    time.sleep(0.01)
raise SystemExit(f"LEAKED: allocated {len(hoard) * CHUNK >> 20} MiB")
