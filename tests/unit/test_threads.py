"""Default torch threads per process: the node's cores shared among the processes a job puts on it."""

from __future__ import annotations

import torch

from dualpar.config import EngineConfig
from dualpar.threads import apply_threads, choose_threads


def _cfg(**parallel) -> EngineConfig:
    launcher = parallel.pop("launcher", "local")
    ray = parallel.pop("ray", {})
    return EngineConfig.from_mapping({"launcher": launcher, "parallel": parallel, "ray": ray})


def test_spawn_divides_the_cores_among_its_stages() -> None:
    assert choose_threads(_cfg(launcher="spawn", stages=2), cores=2).threads == 1
    assert choose_threads(_cfg(launcher="spawn", stages=2), cores=16).threads == 8
    assert choose_threads(_cfg(launcher="spawn", stages=3), cores=8).threads == 2
    assert choose_threads(_cfg(launcher="spawn", stages=4), cores=2).threads == 1  # never below one
    choice = choose_threads(_cfg(launcher="spawn", stages=2), cores=2)
    assert choice.describe() == "1 per process (2 cores / 2 processes of this job)"


def test_torchrun_divides_by_the_ranks_on_this_node() -> None:
    cfg = _cfg(launcher="torchrun", stages=8)
    assert choose_threads(cfg, cores=32, env={"LOCAL_WORLD_SIZE": "4"}).threads == 8  # 2 nodes x 4 ranks
    assert choose_threads(cfg, cores=32, env={}).threads == 4  # no LOCAL_WORLD_SIZE: every stage here
    assert "4 torchrun ranks on this node" in choose_threads(cfg, cores=32, env={"LOCAL_WORLD_SIZE": "4"}).reason


def test_ray_uses_the_stage_actors_cpus() -> None:
    cfg = _cfg(launcher="ray", stages=2)
    assert choose_threads(cfg, cores=2).threads == 1  # 0.5 CPU per stage on a CPU cluster
    assert choose_threads(cfg, cores=16, actor_cpus=4.0).threads == 4
    assert choose_threads(_cfg(launcher="ray", stages=2, ray={"cpus_per_stage": 6}), cores=4).threads == 4
    assert choose_threads(_cfg(launcher="ray", stages=2, ray={"cpus_per_stage": 3}), cores=64).threads == 3


def test_explicit_threads_win_and_local_keeps_torchs_setting() -> None:
    assert choose_threads(_cfg(launcher="spawn", stages=2, threads=3), cores=2).describe() == (
        "3 per process (parallel.threads)"
    )
    before = torch.get_num_threads()
    local = choose_threads(_cfg(), cores=64)
    assert local.threads == before and "one process" in local.reason
    try:
        assert apply_threads(_cfg(launcher="spawn", stages=1)).threads == torch.get_num_threads()
        assert apply_threads(_cfg(threads=1)).threads == 1 == torch.get_num_threads()
    finally:
        torch.set_num_threads(before)


def test_the_plan_says_what_was_chosen(capsys) -> None:
    from dualpar.cli import cli
    from dualpar.threads import node_cores, share

    assert cli(["model=tiny", "plan_only=true", "launcher=spawn", "parallel.stages=2"]) == 0
    cores = node_cores()
    line = f"  threads: {share(cores, 2)} per process ({cores} cores / 2 processes of this job)"
    assert line in capsys.readouterr().err.splitlines()
