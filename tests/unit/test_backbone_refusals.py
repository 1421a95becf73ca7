"""A diffusers directory the engine cannot run exactly exits 2 naming model.path and what is unsupported,
before any weights load (the refused copies below hold config files only: no weights to load at all)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from dualpar.cli import run
from dualpar.testing.jobs import compose
from dualpar.testing.tiny_checkpoint import write_tiny_checkpoint


@pytest.fixture(scope="module")
def base_dir(tmp_path_factory) -> Path:
    return write_tiny_checkpoint(tmp_path_factory.mktemp("wan") / "ckpt", boundary_ratio=0.8)


def _configs_only(src: Path, dst: Path, edits: dict[str, dict]) -> Path:
    """Copy `src` without its weights and merge `edits` ({relative json path: entries}; None deletes)."""
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("*.safetensors", "*.safetensors.index.json"))
    for rel, entries in edits.items():
        path = dst / rel
        data = json.loads(path.read_text())
        for key, value in entries.items():
            if value is None:
                data.pop(key, None)
            else:
                data[key] = value
        path.write_text(json.dumps(data))
    return dst


TI2V_VAE = {"z_dim": 48, "is_residual": True, "patch_size": 2}
CASES = {
    "ti2v-vae-with-16-channel-transformer": (
        {
            "model_index.json": {"expand_timesteps": True, "boundary_ratio": None, "transformer_2": None},
            "vae/config.json": TI2V_VAE,
        },
        "transformer predicts 16 latent channels",
    ),
    "ti2v-vae": ({"vae/config.json": TI2V_VAE}, "z_dim 48"),
    "i2v-pipeline": (
        {
            "model_index.json": {
                "_class_name": "WanImageToVideoPipeline",
                "image_encoder": ["transformers", "CLIPVisionModel"],
            }
        },
        "image-to-video",
    ),
    "i2v-encoder": ({"model_index.json": {"image_encoder": ["transformers", "CLIPVisionModel"]}}, "image_encoder"),
    "i2v-transformer": ({"transformer/config.json": {"image_dim": 1280, "in_channels": 36}}, "image_dim"),
    "i2v-channels": ({"transformer_2/config.json": {"in_channels": 36}}, "36 input channels"),
    "skyreels-pipeline": (
        {"model_index.json": {"_class_name": "SkyReelsV2DiffusionForcingImageToVideoPipeline"}},
        "SkyReels-V2 diffusion-forcing image-to-video",
    ),
    "skyreels-transformer": (
        {"transformer/config.json": {"_class_name": "SkyReelsV2Transformer3DModel"}},
        "SkyReelsV2Transformer3DModel",
    ),
    "unknown-transformer": (
        {"transformer_2/config.json": {"_class_name": "FluxTransformer2DModel"}},
        "unknown transformer",
    ),
    "unknown-pipeline": ({"model_index.json": {"_class_name": "LTXPipeline"}}, "LTXPipeline"),
    "no-boundary": ({"model_index.json": {"boundary_ratio": None}}, "boundary_ratio"),
    "no-low-noise-expert": ({"model_index.json": {"transformer_2": None}}, "names no transformer_2"),
    "experts-differ": ({"transformer_2/config.json": {"num_layers": 3}}, "differ in num_layers"),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_unsupported_directory_is_refused_before_weights(tmp_path, base_dir, name, capsys, monkeypatch):
    import dualpar.models.loader as loader

    def no_weights(*args, **kwargs):
        raise AssertionError("weights were loaded for a refused directory")

    monkeypatch.setattr(loader, "read_owned_tensors", no_weights)
    edits, needle = CASES[name]
    ckpt = _configs_only(base_dir, tmp_path / name, edits)
    assert run(compose([f"model.path={ckpt}", f"output.dir={tmp_path / 'out'}"])) == 2
    err = capsys.readouterr().err
    assert "model.path" in err and needle in err, err
    assert "Fix:" in err or "fix" in err.lower()
    assert not (tmp_path / "out").exists(), "nothing was created"


def test_refusal_through_the_real_cli(tmp_path, base_dir):
    edits, needle = CASES["i2v-pipeline"]
    ckpt = _configs_only(base_dir, tmp_path / "i2v", edits)
    proc = subprocess.run(
        [sys.executable, "-m", "dualpar", f"model.path={ckpt}", f"output.dir={tmp_path / 'o'}"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 2, proc.stderr
    assert "model.path" in proc.stderr and needle in proc.stderr and "Wan2.1 I2V" in proc.stderr


def test_supported_two_expert_directory_plans(tmp_path, base_dir, capsys):
    """The same directory unedited is accepted, and the plan counts both experts' weights."""
    from dualpar.api import prepare
    from dualpar.job import JobLayout
    from dualpar.models.registry import read_model_info
    from dualpar.planner import estimate_stages

    cfg, _ = prepare(
        compose([f"model.path={base_dir}", f"output.dir={tmp_path}", "parallel.stages=2", "launcher=spawn"])
    )
    two = JobLayout(cfg, read_model_info(cfg.model.name, cfg.model.path))
    one = JobLayout(cfg, read_model_info("tiny", None))
    for a, b in zip(estimate_stages(two), estimate_stages(one)):
        assert a.param_bytes == 2 * b.param_bytes
