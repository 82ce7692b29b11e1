"""Where post-hoc jobs run: in this process, in a pool of local processes, or on a Ray cluster.

Every executor maps a picklable top-level function over jobs and yields results as they finish
(in any order). Results must not depend on the executor: jobs derive their seeds from their
inputs, never from process state.
"""
from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
import multiprocessing
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from enum import Enum
from typing import Any, Optional

import torch


class ExecutorName(str, Enum):
    local = "local"  # in this process, one checkpoint after another
    process = "process"  # a pool of local processes (one machine's cores)
    ray = "ray"  # one Ray task per checkpoint (local cluster, or executor.address=...)


@dataclass
class ExecutorConfig:
    """Schema of configs/executor/."""

    name: ExecutorName = ExecutorName.local
    num_workers: Optional[int] = None  # process: pool size (default: CPU count)
    address: Optional[str] = None  # ray: an existing cluster ("auto" or host:port); default local
    num_cpus_per_task: float = 1.0  # ray
    num_gpus_per_task: Optional[float] = None  # ray: default 1 when the cluster has GPUs, else 0


def _init_worker(threads: int) -> None:
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
    workers = parallel_workers(cfg, len(jobs))
    threads = max(1, (os.cpu_count() or 1) // workers)
    context = multiprocessing.get_context("spawn")  # no fork of a process holding torch threads
    with ProcessPoolExecutor(workers, mp_context=context, initializer=_init_worker, initargs=(threads,)) as pool:
        futures = [pool.submit(fn, job) for job in jobs]
        for future in as_completed(futures):
            yield future.result()


def _ray(cfg: ExecutorConfig, fn, jobs) -> Iterator[Any]:
    try:
        import ray  # here, not at the top: Ray is an optional extra (pip install -e '.[ray]')
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
