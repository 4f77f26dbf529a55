"""A simulated two-node Ray cluster (``ray.cluster_utils.Cluster``, as Ray's own tests do) in a
process of its own: ``python -m tests.scale.ray_cluster`` starts a head and a worker node, one
CPU each, prints the cluster's address, then holds the cluster until its standard input closes
(the test is done, or the test process died) and shuts it down.

Its own process so that tests can start it early and go on while its nodes come up (about 8 s
on a 2-core machine, mostly waiting); Ray's node start-up also needs the main thread (signal
handlers), so a thread of the test process cannot do it.
"""
from __future__ import annotations

import sys

#: Object store per node: model versions are small.
OBJECT_STORE_BYTES = 100 * 1024 ** 2


def main() -> None:
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 1, "object_store_memory": OBJECT_STORE_BYTES, "include_dashboard": False})
    try:
        cluster.add_node(num_cpus=1, object_store_memory=OBJECT_STORE_BYTES)
        cluster.wait_for_nodes()
        print(cluster.address, flush=True)
        sys.stdin.read()
    finally:
        cluster.shutdown()


if __name__ == "__main__":
    main()
