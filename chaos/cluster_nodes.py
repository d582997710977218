"""A Redis Cluster of 3 masters and 3 replicas on loopback, and the faults done to it.

Started and stopped by scripts/redis_cluster.sh on free ports, under a
directory of its own, so it never meets another Redis of the box. Used by the
test suite (tests/conftest.py ``redis_cluster``) and by the cluster run of
``make chaos`` (chaos/cluster.py): kill the master that serves a key, wait
until its replica has taken over, start the killed node again (it rejoins as
a replica of the new master).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import redis

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "redis_cluster.sh"
BUS_OFFSET = 10_000  # a node's cluster bus port is its port + 10000


def free_ports(count: int = 6) -> list[int]:
    """``count`` loopback ports that are free, and whose cluster bus ports are free too."""
    ports: list[int] = []
    while len(ports) < count:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port + BUS_OFFSET > 65535 or port in ports:
            continue
        try:
            with socket.socket() as s:
                s.bind(("127.0.0.1", port + BUS_OFFSET))
        except OSError:
            continue
        ports.append(port)
    return ports


def _wait(condition, timeout: float, what: str) -> float:
    """Poll ``condition`` until true; the seconds it took. Raises TimeoutError after ``timeout``."""
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > timeout:
            raise TimeoutError(f"{what}: not within {timeout:g} s")
        time.sleep(0.02)
    return time.monotonic() - started


@dataclass
class LoopbackCluster:
    """Six ``redis-server --cluster-enabled yes`` on 127.0.0.1, data under ``directory``."""

    directory: Path
    ports: list[int]

    @classmethod
    def start(cls, directory: Path, attempts: int = 3) -> "LoopbackCluster":
        """Start the nodes on free ports and create the cluster; returns once it is ok.

        A port found free can be taken before its node binds it (by any
        connection's ephemeral port), so a start that fails is tried again on
        other ports, up to ``attempts`` times.
        """
        failures = []
        for _ in range(attempts):
            cluster = cls(directory, free_ports())
            done = subprocess.run(
                ["bash", str(SCRIPT), "start", str(directory), *map(str, cluster.ports)],
                capture_output=True,
                text=True,
                timeout=120,
            )
            if done.returncode == 0:
                return cluster
            logs = cluster.log_tails()  # read before stop() removes the directory
            cluster.stop()
            failures.append(f"{done.stderr[-2000:]}{logs}")
        raise RuntimeError(
            f"the Redis Cluster did not start in {attempts} attempts: " + "\n---\n".join(failures)
        )

    def log_tails(self, lines: int = 5) -> str:
        """The last lines of each node's log (or that it has none), for an error message."""
        tails = []
        for port in self.ports:
            log = self.directory / str(port) / "redis.log"
            text = log.read_text(errors="replace").splitlines()[-lines:] if log.exists() else []
            tails.append(f"\nnode {port}: " + (" | ".join(text) if text else "no log"))
        return "".join(tails)

    def stop(self) -> None:
        """Stop every node and remove the directory."""
        subprocess.run(["bash", str(SCRIPT), "stop", str(self.directory)], timeout=120)

    @property
    def url(self) -> str:
        """A URL naming one node: what ``REDIS_URL`` is set to."""
        return f"redis://127.0.0.1:{self.ports[0]}/0"

    def node(self, port: int) -> redis.Redis:
        """A plain client of one node."""
        return redis.Redis(host="127.0.0.1", port=port, socket_timeout=2, socket_connect_timeout=1)

    def pid(self, port: int) -> int | None:
        """The process id of the node on ``port``, if it runs."""
        try:
            pid = int((self.directory / str(port) / "redis.pid").read_text())
            os.kill(pid, 0)
        except (OSError, ValueError):
            return None
        return pid

    def master_of(self, key: str) -> int:
        """The port of the master that serves ``key``'s slot now (as a live node sees it)."""
        for port in self.ports:
            if self.pid(port) is not None:
                master = self._serving_quietly(key, port)
                if master is not None:
                    return master
        raise RuntimeError(f"no node of the cluster names a master for {key!r}")

    def slots(self, port: int) -> list[list]:
        """``CLUSTER SLOTS`` as the node on ``port`` answers it."""
        return self.node(port).execute_command("CLUSTER SLOTS")

    def serving(self, key: str, via: int) -> int | None:
        """The port of the master of ``key``'s slot as the node on ``via`` sees it, if ok."""
        node = self.node(via)
        if node.execute_command("CLUSTER INFO").get("cluster_state") != "ok":
            return None
        slot = node.execute_command("CLUSTER KEYSLOT", key)
        for start, end, master, *_ in self.slots(via):
            if start <= slot <= end:
                return int(master[1])
        return None

    def kill(self, port: int) -> None:
        """SIGKILL the node on ``port``: no shutdown, no last write to its AOF."""
        pid = self.pid(port)
        if pid is not None:
            os.kill(pid, signal.SIGKILL)
            _wait(lambda: self.pid(port) is None, 10, f"node {port} to die")

    def restart(self, port: int) -> None:
        """Start the node on ``port`` again, from its AOF and nodes.conf."""
        subprocess.run(
            ["bash", str(SCRIPT), "restart", str(self.directory), str(port)],
            check=True,
            capture_output=True,
            timeout=60,
        )

    def fail_over(self, key: str, timeout: float = 30.0) -> dict:
        """Kill the master of ``key``'s slot, wait for its replica to take over, start it again.

        Returns the ports involved and the seconds from the SIGKILL until every
        other node saw the slot served by the promoted replica, and until the old
        master was an online replica again.
        """
        old = self.master_of(key)
        replication = self.node(old).info("replication")
        if replication.get("role") != "master":
            raise RuntimeError(f"node {old} serves {key!r} but is a {replication.get('role')}")
        replicas = {v["port"] for k, v in replication.items() if k.startswith("slave")}
        others = [p for p in self.ports if p != old]
        killed_at = time.monotonic()
        self.kill(old)
        _wait(
            lambda: all(self._serving_quietly(key, via) not in (None, old) for via in others),
            timeout,
            f"a replica to take over from {old}",
        )
        took_over = time.monotonic() - killed_at
        new = self.master_of(key)
        if new not in replicas:
            raise RuntimeError(f"{new} serves {key!r} after {old} died, not its replica {replicas}")
        self.restart(old)
        _wait(lambda: self._online_replica_of(new, old), timeout, f"{old} to rejoin")
        return {
            "killed_master": old,
            "promoted": new,
            "failover_s": round(took_over, 2),
            "rejoined_as_replica_s": round(time.monotonic() - killed_at, 2),
        }

    def _serving_quietly(self, key: str, via: int) -> int | None:
        try:
            return self.serving(key, via)
        except redis.RedisError:
            return None

    def rejoined(self, old_master: int, master: int) -> bool:
        """Whether the node on ``old_master`` is an online replica of ``master`` now."""
        return self._online_replica_of(master, old_master)

    def _online_replica_of(self, master: int, replica: int) -> bool:
        try:
            info = self.node(master).info("replication")
        except redis.RedisError:
            return False
        return any(
            isinstance(v, dict) and v.get("port") == replica and v.get("state") == "online"
            for k, v in info.items()
            if k.startswith("slave")
        )
