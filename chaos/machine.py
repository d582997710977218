"""What a chaos run ran on: CPU, memory, load, versions, the code."""

from __future__ import annotations

import os
import platform
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _sh(*cmd: str) -> str:
    try:
        return subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT).stdout
    except OSError:
        return ""


def cpu_model() -> str:
    """The CPU's model name (Linux /proc)."""
    return next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )


def memory_gib() -> float:
    """Total memory, GiB, one decimal (Linux /proc)."""
    return round(int(Path("/proc/meminfo").read_text().split()[1]) / 1024**2, 1)


def machine() -> dict:
    """The box and the code, as of now."""
    dirty = _sh("git", "status", "--porcelain", "--untracked-files=no", "app", "bandits")
    return {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "memory_gib": memory_gib(),
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "os": platform.platform(),
        "python": platform.python_version(),
        "redis": (_sh("redis-server", "--version").split(" v=")[1:] or ["?"])[0].split()[0],
        "postgres": " ".join(_sh("/usr/lib/postgresql/15/bin/postgres", "--version").split()[2:3]),
        "commit": _sh("git", "rev-parse", "--short", "HEAD").strip(),
        "uncommitted_in_app": [line[3:] for line in dirty.splitlines() if line.strip()],
    }


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used so far (Linux /proc, 100 ticks a second)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / 100
