"""Where a running plant is found: the run directory and the run manifest.

`streamctl up` writes ``<run dir>/<plant>.json`` (supervisor pid and start time, endpoints,
segments, state) and removes it on a clean stop; `status`, `tail`, `down` and `clean` read
it. Sockets live beside it: each plant's internal `<plant>.pub`, and the public
`replay-<pid>.out` of `streamctl replay`. The run directory is ``$STREAMCTL_RUN_DIR``, else ``$XDG_RUNTIME_DIR/streamctl``, else
``/tmp/streamctl-<uid>``.
"""

from __future__ import annotations

import json
import os
import stat
import tempfile
from pathlib import Path
from typing import Any

from streamctl.shm.segments import process_alive

__all__ = ["run_dir", "manifest_path", "write_manifest", "read_manifest", "remove_manifest", "running_plants",
           "supervisor_alive", "internal_endpoint", "stale_sockets"]


def run_dir() -> Path:
    base = os.environ.get("STREAMCTL_RUN_DIR")
    if base:
        path = Path(base)
    elif os.environ.get("XDG_RUNTIME_DIR"):
        path = Path(os.environ["XDG_RUNTIME_DIR"]) / "streamctl"
    else:
        path = Path(tempfile.gettempdir()) / f"streamctl-{os.getuid()}"
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    info = path.lstat()
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid():
        # Another user could plant a socket that our workers would publish into.
        raise PermissionError(f"run directory `{path}` is not a directory owned by uid {os.getuid()}")
    return path


def manifest_path(plant: str) -> Path:
    return run_dir() / f"{plant}.json"


def internal_endpoint(plant: str) -> str:
    """The plant's internal publish endpoint (hub XSUB), an ipc socket in the run directory."""
    if not plant or "/" in plant or "\x00" in plant:
        raise ValueError(f"`plant` must be a non-empty name without '/' or NUL; was {plant!r}")
    return f"ipc://{run_dir() / (plant + '.pub')}"


def write_manifest(plant: str, data: dict[str, Any]) -> None:
    """Atomically (re)write the manifest, so readers never see half a file."""
    path = manifest_path(plant)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True))
    os.replace(tmp, path)


def read_manifest(plant: str) -> dict[str, Any] | None:
    try:
        return json.loads(manifest_path(plant).read_text())
    except (OSError, ValueError):
        return None


def remove_manifest(plant: str) -> None:
    for path in (manifest_path(plant), manifest_path(plant).with_suffix(".json.tmp")):
        path.unlink(missing_ok=True)


def supervisor_alive(manifest: dict[str, Any] | None) -> bool:
    """Whether the supervisor that wrote `manifest` still runs (same pid and start time)."""
    if not manifest:
        return False
    return process_alive(manifest.get("supervisor_pid", 0), manifest.get("supervisor_started"))


def running_plants() -> list[dict[str, Any]]:
    """Manifests whose supervisor is alive."""
    manifests = (read_manifest(path.stem) for path in sorted(run_dir().glob("*.json")))
    return [data for data in manifests if data is not None and supervisor_alive(data)]


def _listening_sockets() -> set[str]:
    """Paths of the unix sockets some live process listens on (from ``/proc/net/unix``)."""
    try:
        lines = Path("/proc/net/unix").read_text().splitlines()[1:]
    except OSError:  # pragma: no cover - not Linux
        return set()
    # Num RefCount Protocol Flags Type St Inode [Path]; flag 0x10000 is __SO_ACCEPTCON (listening)
    return {fields[7] for fields in map(str.split, lines) if len(fields) >= 8 and int(fields[3], 16) & 0x10000}


def stale_sockets(plant: str | None = None) -> list[Path]:
    """Socket files in the run directory that nobody listens on and whose plant's supervisor is
    dead: what a killed plant or replay left behind (optionally only those of `plant`)."""
    listening = _listening_sockets()
    stale = []
    for path in sorted(run_dir().iterdir()):
        if plant is not None and path.stem != plant:
            continue
        try:
            is_socket = stat.S_ISSOCK(path.lstat().st_mode)
        except OSError:
            continue
        if is_socket and str(path) not in listening and not supervisor_alive(read_manifest(path.stem)):
            stale.append(path)
    return stale
