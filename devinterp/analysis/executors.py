"""Where post-hoc jobs run: in this process, in a pool of local processes, or on a Ray cluster.

Every executor maps a picklable top-level function over jobs and yields results as they finish
(in any order). Results must not depend on the executor: jobs derive their seeds from their
inputs, never from process state.
"""
from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor, as_completed
from typing import Any

from devinterp.config import ExecutorConfig, ExecutorName


def _init_worker(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)


def map_unordered(cfg: ExecutorConfig, fn: Callable[[Any], Any], jobs: Iterable[Any]) -> Iterator[Any]:
    jobs = list(jobs)
    if cfg.name == ExecutorName.local or not jobs:
        yield from map(fn, jobs)
    elif cfg.name == ExecutorName.process:
        yield from _process_pool(cfg, fn, jobs)
    else:
        yield from _ray(cfg, fn, jobs)


def parallel_workers(cfg: ExecutorConfig, num_jobs: int) -> int:
    """How many jobs run at once: 1 in this process, the pool size for local processes; for Ray the
    cluster's share is unknown here, so 1 (a conservative time-left estimate)."""
    if cfg.name == ExecutorName.process:
        return max(1, min(cfg.num_workers or os.cpu_count() or 1, num_jobs))
    return 1


def _process_pool(cfg: ExecutorConfig, fn, jobs) -> Iterator[Any]:
    import multiprocessing

    workers = parallel_workers(cfg, len(jobs))
    threads = max(1, (os.cpu_count() or 1) // workers)
    context = multiprocessing.get_context("spawn")  # no fork of a process holding torch threads
    with ProcessPoolExecutor(workers, mp_context=context, initializer=_init_worker, initargs=(threads,)) as pool:
        futures = [pool.submit(fn, job) for job in jobs]
        for future in as_completed(futures):
            yield future.result()


def _ray(cfg: ExecutorConfig, fn, jobs) -> Iterator[Any]:
    try:
        import ray
    except ImportError as e:  # pragma: no cover - ray is an optional extra
        raise RuntimeError("executor=ray needs Ray: pip install -e '.[ray]'") from e
    started_here = not ray.is_initialized()
    if started_here:
        ray.init(address=cfg.address, include_dashboard=False, log_to_driver=False,
                 configure_logging=False, ignore_reinit_error=True)
    try:
        gpus = cfg.num_gpus_per_task
        if gpus is None:
            gpus = 1 if ray.cluster_resources().get("GPU", 0) > 0 else 0
        remote = ray.remote(num_cpus=cfg.num_cpus_per_task, num_gpus=gpus)(fn)
        pending = [remote.remote(job) for job in jobs]
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            yield ray.get(done[0])
    finally:
        if started_here:
            ray.shutdown()
