"""Redis Cluster: telling a cluster node from a single server, the client for each, and WAIT."""

from app.cluster.client import UNAVAILABLE, connect, is_cluster, primaries
from app.cluster.replication import ReplicaWait, ReplicationLagging, replicas_to_wait

__all__ = [
    "UNAVAILABLE",
    "ReplicaWait",
    "ReplicationLagging",
    "connect",
    "is_cluster",
    "primaries",
    "replicas_to_wait",
]
