"""The pipeline replay: it follows the engine's plan, conserves work, and reproduces the bubble."""

from __future__ import annotations

import dataclasses

import pytest

import dualpar.schedule.blockwise as blockwise
import dualpar.sim.job as sim_job
from dualpar.plan_split import split_layers
from dualpar.schedule.blockwise import blockwise_plan, idle_fraction_estimate
from dualpar.sim.baselines import dualparal_published
from dualpar.sim.cluster import load_cluster
from dualpar.sim.costs import CostModel
from dualpar.sim.job import Job
from dualpar.sim.model import WAN21_1_3B
from dualpar.sim.pipeline import PipelineConfig, run_pipeline
from dualpar.sim.simulate import simulate

UNIT = CostModel(
    layer_s=1.0,
    layer_right_s=1.0,
    embed_s=0.0,
    head_s=0.0,
    guidance_s=0.0,
    scheduler_s=0.0,
    decode_s_per_latent=0.0,
    encode_s=0.0,
    hidden_msg_s=0.0,
    velocity_msg_s=0.0,
)


def test_simulator_replays_the_engine_plan_itself() -> None:
    assert sim_job.blockwise_plan is blockwise.blockwise_plan


@pytest.mark.parametrize("stages,halves", [(1, 1), (3, 1), (4, 2)])
def test_one_compute_event_per_item_per_stage(stages: int, halves: int) -> None:
    plan = blockwise_plan(7, 5)
    r = run_pipeline(plan, split_layers(8, stages), UNIT, PipelineConfig(halves=halves))
    assert r.compute_events == len(plan.items) * stages * halves
    computes = [s for st in r.stages for s in st.spans if s.kind == "compute"]
    assert len(computes) == r.compute_events
    for st in r.stages:  # strictly in global order on every stage
        orders = [s.item for s in st.spans if s.kind == "compute"]
        assert orders == sorted(orders)


def test_single_stage_latency_is_the_sum_of_all_work() -> None:
    costs = dataclasses.replace(
        UNIT,
        layer_right_s=1.5,
        embed_s=0.2,
        head_s=0.3,
        guidance_s=0.05,
        scheduler_s=0.1,
        decode_s_per_latent=0.7,
        hidden_msg_s=9.0,
        velocity_msg_s=9.0,
    )
    plan = blockwise_plan(6, 4)
    cfg = PipelineConfig(block_latents=3, context_latents=2)
    r = run_pipeline(plan, split_layers(5, 1), costs, cfg)
    right = sum(x.has_right for x in plan.items)
    layers = 5 * (right * 1.5 + (len(plan.items) - right) * 1.0)
    per_item = 0.2 + 0.3 + 0.05 + 0.1
    decode = 0.7 * (6 * 3 + 2)
    assert r.makespan_s == pytest.approx(layers + per_item * len(plan.items) + decode)
    assert r.stages[0].busy_s == pytest.approx(r.makespan_s)
    assert not [s for s in r.stages[0].spans if s.kind in ("send", "recv")]  # N = 1: no communication


@pytest.mark.parametrize(
    "stages,steps,blocks", [(4, 20, 20), (4, 50, 32), (8, 50, 32), (8, 10, 40), (6, 30, 100)]
)
def test_idle_fraction_matches_the_bubble_formula(stages: int, steps: int, blocks: int) -> None:
    """Zero communication, equal stages, no wait for the finished head block (the formula's setting).
    Tolerance: 35% of the formula + 0.005 absolute. `same` tracks the formula closely; `ahead` adds
    warm-up/cool-down waits (its dependency is one iteration closer). Waiting for the head block at every
    iteration start (the engine today) drains the pipe once per iteration: far more idle."""
    plan = blockwise_plan(blocks, steps)
    ranges = split_layers(2 * stages, stages)
    formula = idle_fraction_estimate(stages, steps, blocks)
    for left in ("same", "ahead"):
        r = run_pipeline(plan, ranges, UNIT, PipelineConfig(left_context=left, head_wait=False))
        assert abs(r.mean_idle_fraction() - formula) <= 0.35 * formula + 0.005, (left, r.mean_idle_fraction())
    waiting = run_pipeline(plan, ranges, UNIT, PipelineConfig(head_wait=True))
    assert waiting.mean_idle_fraction() > 1.5 * formula


def test_fewer_blocks_in_flight_than_stages_idles_most_stages() -> None:
    cfg = PipelineConfig(head_wait=False)
    few = run_pipeline(blockwise_plan(4, 50), split_layers(16, 8), UNIT, cfg)
    many = run_pipeline(blockwise_plan(16, 50), split_layers(16, 8), UNIT, cfg)
    assert few.mean_idle_fraction() > 0.4
    assert few.mean_idle_fraction() > 4 * many.mean_idle_fraction()
    assert few.dependency_wait_s > many.dependency_wait_s


def test_slow_links_and_bounded_sends_cost_time() -> None:
    plan = blockwise_plan(8, 6)
    ranges = split_layers(8, 4)
    fast = run_pipeline(plan, ranges, UNIT, PipelineConfig())
    slow_costs = dataclasses.replace(UNIT, hidden_msg_s=1.5, velocity_msg_s=0.1)
    slow = run_pipeline(plan, ranges, slow_costs, PipelineConfig(max_inflight=2))
    tight = run_pipeline(plan, ranges, slow_costs, PipelineConfig(max_inflight=1))
    assert fast.makespan_s < slow.makespan_s <= tight.makespan_s


def test_memory_is_flat_in_video_length_for_dualpar_but_grows_for_published_code() -> None:
    cluster = load_cluster("8x4090")
    short, long = Job(frames=1025, steps=20), Job(frames=4097, steps=20)
    assert simulate(short, WAN21_1_3B, cluster).peak_memory == simulate(long, WAN21_1_3B, cluster).peak_memory
    pub_short = dualparal_published(WAN21_1_3B, short, cluster).memory_per_gpu
    pub_long = dualparal_published(WAN21_1_3B, long, cluster).memory_per_gpu
    assert pub_long > pub_short * 1.5


def test_decode_policies_and_cfg_split_run() -> None:
    cluster = load_cluster("8xh100")
    job = Job(frames=161, steps=10, stages=4)
    lat = {
        (d, w): simulate(dataclasses.replace(job, decode_at=d, head_wait=w), WAN21_1_3B, cluster).latency_s
        for d in ("retire", "interleave", "end")
        for w in (True, False)
    }
    assert (
        lat[("retire", True)] > lat[("retire", False)]
    )  # waiting for the head each iteration drains the pipe
    drained = simulate(dataclasses.replace(job, checkpoint_every=1), WAN21_1_3B, cluster).latency_s
    assert drained > lat[("retire", True)]
    split = simulate(dataclasses.replace(job, cfg_split=True), WAN21_1_3B, cluster)
    assert split.pipeline.compute_events == 2 * len(job.plan().items) * job.stages
