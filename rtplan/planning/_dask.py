"""The Dask client of ``rtplan batch``, ``rtplan plan --scheduler`` and ``rtplan dose --scheduler``
(Dask is optional)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from .._internal.messages import quote
from ..errors import ClusterError, RtplanError

__all__ = ["dask_client"]


@contextlib.contextmanager
def dask_client(
    scheduler: str | None = None,
    *,
    n_workers: int = 2,
    processes: bool = False,
    threads_per_worker: int = 1,
) -> Iterator[Any]:
    """A Dask client on ``scheduler``, or on a fresh LocalCluster."""
    try:
        from distributed import Client, LocalCluster
    except ImportError:
        raise RtplanError(
            "A Dask cluster needs Dask distributed; install it with "
            'pip install "rtplan[dask]" (or pip install "dask[distributed]").'
        ) from None
    if scheduler is not None:
        try:
            client = Client(scheduler)
        except (OSError, TimeoutError, ValueError, TypeError) as exc:
            raise ClusterError(
                f"Cannot reach the Dask scheduler at {quote(scheduler, 120)} "
                f"({type(exc).__name__}: {' '.join(str(exc).split())[:300]}); check the "
                "address (tcp://host:8786) and that the scheduler runs."
            ) from exc
        try:
            yield client
        finally:
            client.close()
        return
    cluster = LocalCluster(
        n_workers=n_workers,
        threads_per_worker=threads_per_worker,
        processes=processes,
        # a free port: with None the scheduler still serves HTTP on 8787, and a second
        # cluster on the same machine then warns that the port is taken
        dashboard_address=":0",
    )
    client = Client(cluster)
    try:
        yield client
    finally:
        client.close()
        cluster.close()
