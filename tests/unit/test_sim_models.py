"""Model presets, cluster files, baselines, sweeps, suggestion and the CLI of the performance model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dualpar.sim.baselines import compare
from dualpar.sim.cluster import GIB, cluster_from_dict, load_cluster
from dualpar.sim.explore import plan_warnings, suggest, sweep
from dualpar.sim.job import Job
from dualpar.sim.model import WAN21_1_3B, WAN21_14B, from_diffusers_config, get_model

ROOT = Path(__file__).resolve().parents[2]


def test_presets_match_the_checked_parameter_counts() -> None:
    assert WAN21_1_3B.total_params == pytest.approx(1.419e9, rel=2e-3)
    assert WAN21_1_3B.layer_params == pytest.approx(46.4e6, rel=2e-3)
    assert WAN21_14B.total_params == pytest.approx(14.29e9, rel=2e-3)
    assert WAN21_14B.layer_params == pytest.approx(351e6, rel=2e-3)
    assert get_model("Wan2.1-T2V-14B") is WAN21_14B
    with pytest.raises(ValueError):
        get_model("wan9")


def test_tiny_config_counts_match_diffusers() -> None:
    """Counts taken from diffusers 0.42.1 WanTransformer3DModel(**cfg): 13,616 params, 3,440 per block,
    2,992 in patch + condition embedders (importing diffusers here would take most of the time budget)."""
    cfg = {
        "patch_size": [1, 2, 2],
        "num_attention_heads": 2,
        "attention_head_dim": 8,
        "in_channels": 4,
        "out_channels": 4,
        "text_dim": 16,
        "freq_dim": 16,
        "ffn_dim": 32,
        "num_layers": 3,
    }
    m = from_diffusers_config(cfg)
    assert (m.total_params, m.layer_params, m.embed_params) == (13616, 3440, 2992)


def test_cluster_files_load() -> None:
    for name in ("8x4090", "8xh100", "cpu2"):
        c = load_cluster(name)
        assert c.gpus >= 1 and c.device.flops_per_s > 0
    assert not load_cluster("8x4090").link.p2p and load_cluster("8xh100").link.p2p
    c = load_cluster("8x4090")
    assert c.link.transfer_s(1e9) > 2 * 1e9 / (c.link.bandwidth_gbs * 1e9)  # host-staged: two copies
    with pytest.raises(ValueError, match="known"):
        load_cluster("nope")


def test_baselines_are_ordered_sensibly_for_a_long_video() -> None:
    cluster = load_cluster("8xh100")
    rows = {r.method: r for r in compare(WAN21_14B, Job(height=720, width=1280, frames=1025), cluster)}
    assert rows["dualpar"].memory_per_gpu < rows["ulysses"].memory_per_gpu  # shard vs full replica
    assert rows["dualpar"].latency_s < rows["ulysses"].latency_s  # window attention vs full attention
    assert rows["single_gpu"].latency_s > rows["dualpar"].latency_s * 4
    assert rows["fifo_diffusion"].idle_fraction > 0.5  # ceil(50/21) = 3 windows for 8 GPUs
    assert all(r.latency_s > 0 and 0 <= r.idle_fraction < 1 for r in rows.values())


def _small_cluster(memory_gib: float):
    return cluster_from_dict(
        {
            "name": "test",
            "gpus": 4,
            "dtype_bytes": 2,
            "device": {
                "name": "x",
                "peak_tflops": 100.0,
                "efficiency": 0.5,
                "memory_gib": memory_gib,
                "mem_bandwidth_gbs": 1000.0,
                "vae_efficiency": 0.2,
            },
            "link": {"bandwidth_gbs": 25.0, "latency_us": 20.0, "p2p": False},
        }
    )


def test_suggest_respects_the_memory_limit_and_keeps_context() -> None:
    job = Job(height=480, width=832, frames=161, steps=8, block_latents=4, context_latents=4, stages=4)
    s = suggest(job, _small_cluster(24), WAN21_1_3B, blocks=(4, 8), stages=(2, 4))
    assert s.fits and s.context_latents == 4 and s.block_latents >= 4
    stages, p, c, split = s
    assert (stages, p, c) == (s.stages, s.block_latents, s.context_latents)
    tiny = suggest(job, _small_cluster(1), WAN21_1_3B, blocks=(4,), stages=(4,))
    assert not tiny.fits and tiny.peak_memory_gib > 1


def test_sweep_and_warnings() -> None:
    job = Job(frames=81, steps=6, block_latents=4, context_latents=2, stages=4)
    rows = sweep(job, WAN21_1_3B, _small_cluster(80), "stages", [1, 2, 4])
    assert [r["stages"] for r in rows] == [1, 2, 4]
    assert rows[2]["latency_s"] < rows[0]["latency_s"]
    assert plan_warnings(Job(frames=81, steps=50, block_latents=8, context_latents=8, stages=8))
    assert not plan_warnings(Job(frames=1025, steps=50, stages=8))


def test_cli_writes_json(tmp_path: Path) -> None:
    import importlib.util

    spec = importlib.util.spec_from_file_location("simulate_cli", ROOT / "tools" / "simulate.py")
    cli = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    spec.loader.exec_module(cli)
    out = tmp_path / "o.json"
    args = [
        "--frames",
        "81",
        "--steps",
        "4",
        "--stages",
        "4",
        "--block-latents",
        "4",
        "--context-latents",
        "2",
        "--cluster",
        "8xh100",
        "--baselines",
        "--json",
        str(out),
    ]
    assert cli.main(args) == 0
    data = json.loads(out.read_text())
    assert data["result"]["stages"] == 4 and len(data["baselines"]) >= 7
    assert data["result"]["peak_memory_gib"] * GIB > 0
