"""How many torch threads each process of a job uses: one rule for every launcher, and the reason for it.

torch's default is one thread per core in every process. A job that puts several processes on one node then
runs cores x processes threads on cores CPUs and every stage slows down several-fold; the default here gives
each process an equal share of the node's cores (at least one). `parallel.threads` overrides it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from dualpar.config import EngineConfig


@dataclass(frozen=True)
class ThreadChoice:
    """Threads per process and the reason, as the plan prints it."""

    threads: int
    reason: str  # e.g. "2 cores / 2 processes of this job (launcher=spawn)"

    def describe(self) -> str:
        return f"{self.threads} per process ({self.reason})"


def node_cores() -> int:
    """CPUs this process may run on (the affinity mask where the OS has one, e.g. under taskset or cgroups)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def share(cores: int, processes: int) -> int:
    """Equal share of `cores` among `processes`, at least 1."""
    return max(1, cores // max(1, processes))


def choose_threads(
    cfg: EngineConfig,
    cores: int | None = None,
    env: Mapping[str, str] | None = None,
    actor_cpus: float | None = None,
) -> ThreadChoice:
    """Threads per process for `cfg` on this node.

    - `parallel.threads` when set;
    - launcher=local: one process, so torch's own setting (one thread per core unless OMP_NUM_THREADS or the
      program embedding dualpar chose otherwise); spawn: the node divided among `parallel.stages` processes;
    - torchrun: divided among the ranks torchrun starts on this node (LOCAL_WORLD_SIZE);
    - ray: the CPUs the stage actor reserved (`actor_cpus`, or `ray.cpus_per_stage`), so jobs that the driver
      runs side by side divide the node as their reservations do.
    """
    cores = node_cores() if cores is None else cores
    env = os.environ if env is None else env
    explicit = cfg.parallel.threads
    if explicit:
        return ThreadChoice(int(explicit), "parallel.threads")
    if cfg.launcher == "ray":
        cpus = actor_cpus if actor_cpus is not None else cfg.ray.cpus_per_stage
        cpus = 0.5 if cpus is None else cpus  # ray.py's default bundle on a CPU-only cluster
        return ThreadChoice(max(1, min(int(cpus), cores)), f"the {cpus:g} CPUs each Ray stage actor reserves")
    if cfg.launcher == "torchrun":
        processes = int(env.get("LOCAL_WORLD_SIZE", cfg.parallel.stages))
        return ThreadChoice(share(cores, processes), f"{cores} cores / {processes} torchrun ranks on this node")
    if cfg.launcher == "spawn":
        processes = cfg.parallel.stages
        return ThreadChoice(share(cores, processes), f"{cores} cores / {processes} processes of this job")
    return ThreadChoice(torch_threads(), "one process: torch's own setting")


def torch_threads() -> int:
    """This process's torch threads: one per core unless OMP_NUM_THREADS or the embedding program said less."""
    import torch

    return torch.get_num_threads()


def apply_threads(cfg: EngineConfig) -> ThreadChoice:
    """Set this process's torch threads from `choose_threads` (called by every rank before any compute)."""
    import torch

    actor_cpus = _ray_actor_cpus() if cfg.launcher == "ray" else None
    choice = choose_threads(cfg, actor_cpus=actor_cpus)
    if choice.threads != torch.get_num_threads():
        torch.set_num_threads(choice.threads)
    return choice


def _ray_actor_cpus() -> float | None:
    """The CPUs Ray assigned to this actor (None outside a Ray worker)."""
    try:
        import ray

        if not ray.is_initialized():
            return None
        return float(ray.get_runtime_context().get_assigned_resources().get("CPU", 0.0)) or None
    except Exception:  # not in a Ray worker, or an older runtime-context API
        return None
