"""The Dask scheduler's cost per fleet task on the embedded local cluster: the round trip of one no-op task
(submit -> result, with the resources a bench task asks for) and the throughput of many independent ones.
    .venv/bin/python bench/scripts/fleet_overhead.py
"""

import statistics
import time

from distributed import Client

from edgelm.fleet.cluster import EXPORT_SHARE, MACHINE, local_cluster


def noop(i):
    return i


def main(n_trip: int = 50, n_batch: int = 500) -> None:
    cluster = local_cluster()
    with Client(cluster) as client:
        client.submit(noop, -1, pure=False).result()  # warm
        trips = []
        for i in range(n_trip):
            start = time.perf_counter()
            client.submit(noop, i, resources={MACHINE: 1.0, "cpu": 1.0}, pure=False).result()
            trips.append(time.perf_counter() - start)
        start = time.perf_counter()
        futures = [client.submit(noop, i, resources={MACHINE: EXPORT_SHARE}, pure=False) for i in range(n_batch)]
        client.gather(futures)
        batch = time.perf_counter() - start
    cluster.close()
    q = statistics.quantiles(trips, n=10)
    print(f"round trip of one no-op task (bench resources), {n_trip} in turn: median "
          f"{statistics.median(trips) * 1e3:.1f} ms (p10 {q[0] * 1e3:.1f}, p90 {q[-1] * 1e3:.1f})")
    print(f"{n_batch} independent no-op tasks (export resources): {batch:.2f} s, {batch / n_batch * 1e3:.2f} ms a task")


if __name__ == "__main__":
    main()
