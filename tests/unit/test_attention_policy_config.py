"""Dense-steps / dense-layers policy, AttentionConfig validation, Hydra group files and the registry."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch
import yaml

from dualpar.attention.clustered import ClusteredAttention
from dualpar.attention.config import AttentionConfig
from dualpar.attention.dense import DenseAttention
from dualpar.attention.policy import PolicyBackend
from dualpar.attention.registry import available_backends, build_backend
from dualpar.attention.synthetic import clustered_qkv, make_call

torch.set_num_threads(1)

CONF = Path(__file__).resolve().parents[2] / "conf" / "attention"


def test_dense_steps_and_layers_are_bit_identical_to_dense():
    q, k, v = clustered_qkv(2, 2, 64, 96, 16)
    pol = PolicyBackend(ClusteredAttention(AttentionConfig(backend="clustered", impl="reference")),
                        dense_steps=2, dense_layers=(5,))
    dense = DenseAttention()
    for layer, step in ((0, 0), (0, 1), (5, 3)):
        call = make_call(layer=layer, step=step, q_grid=(1, 8, 8), kv_grid=(3, 4, 8))
        assert torch.equal(pol(q, k, v, call), dense(q, k, v, call))
    sparse_out = pol(q, k, v, make_call(layer=0, step=2, q_grid=(1, 8, 8), kv_grid=(3, 4, 8)))
    assert not torch.equal(sparse_out, dense(q, k, v, make_call()))
    st = pol.stats()
    assert [(r["layer"], r["step"], r["path"]) for r in st.per_call] == [
        (0, 0, "dense"), (0, 1, "dense"), (0, 2, "clustered"), (5, 3, "dense")]
    assert st.calls == 4 and pol.sparse_stats().calls == 1
    assert 0.0 < pol.sparse_stats().density < st.density < 1.0


def test_dense_steps_fraction_and_min_pairs():
    pol = PolicyBackend(DenseAttention(), dense_steps=0.2, min_pairs=100)
    assert pol.runs_dense(make_call(step=9, num_steps=50), 64, 64)
    assert not pol.runs_dense(make_call(step=10, num_steps=50), 64, 64)
    assert pol.runs_dense(make_call(step=10, num_steps=50), 8, 8)


@pytest.mark.parametrize("key,value", [
    ("density", 1.5), ("routing", "greedy"), ("impl", "triton"), ("num_q_clusters", 0),
    ("kmeans_iters_warm", -1), ("tile_size", (1, 2)), ("window", (0, 1, 1)), ("dense_steps", 2.5),
    ("dense_layers", (-1,)), ("compensation", "yes"), ("centroid_init", "random"), ("top_p", 0.0),
    ("error_power", 3), ("ratio", "per_token"), ("budget_scope", "layer"), ("cache_keys", "drop"),
])
def test_config_errors_name_the_key(key, value):
    with pytest.raises(ValueError, match=rf"attention\.{key}="):
        AttentionConfig(**{key: value})


def test_from_mapping_rejects_unknown_keys_and_converts_lists():
    with pytest.raises(ValueError, match=r"attention\.q_clusters="):
        AttentionConfig.from_mapping({"q_clusters": 8})
    cfg = AttentionConfig.from_mapping({"tile_size": [2, 4, 4], "dense_layers": [3, 0, 3]})
    assert cfg.tile_size == (2, 4, 4) and cfg.dense_layers == (0, 3)
    assert cfg.dense_step_count(40) == 0


@pytest.mark.parametrize("name", ["dense", "clustered", "sliding_tile"])
def test_group_files_hold_every_key(name):
    text = (CONF / f"{name}.yaml").read_text()
    assert text.startswith("# @package attention")
    data = yaml.safe_load(text)
    assert set(data) == {f.name for f in dataclasses.fields(AttentionConfig)}
    assert AttentionConfig.from_mapping(data).backend == name


def test_registry_builds_each_backend():
    assert {"dense", "clustered", "sliding_tile"} <= set(available_backends())
    cfg = AttentionConfig(backend="clustered", dense_layers=(0,))
    be = build_backend("clustered", cfg)
    assert isinstance(be, PolicyBackend) and be.name == "clustered"
    assert build_backend("sliding_tile", {"tile_size": [1, 4, 4]}).sparse.cfg.tile_size == (1, 4, 4)
    assert build_backend("dense").name == "dense"
    with pytest.raises(ValueError, match="unknown"):
        build_backend("radial_v2")
