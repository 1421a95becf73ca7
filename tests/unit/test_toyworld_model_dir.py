"""Model directory: write/read round trip, and the shipped toyworld model loads, steps and samples objects."""

import json

import numpy as np
import torch
from diffusers import WanTransformer3DModel

from dualpar.metrics import detect_objects
from dualpar.models.codec import to_uint8_frames
from dualpar.toyworld.codec import SpaceToDepthCodec
from dualpar.toyworld.model_dir import (
    MODEL_INDEX,
    default_model_dir,
    new_text_encoder,
    new_transformer,
    read_model_dir,
    write_model_dir,
)
from dualpar.toyworld.sampling import predict_flow, sample_euler
from dualpar.toyworld.text import WordPromptEncoder


def test_write_read_random_model_dir(tmp_path):
    torch.manual_seed(0)
    tr = new_transformer(num_layers=1)
    write_model_dir(tmp_path / "m", tr, SpaceToDepthCodec(), new_text_encoder())
    model = read_model_dir(tmp_path / "m")
    assert json.loads((tmp_path / "m" / "model_index.json").read_text()) == MODEL_INDEX
    assert model.settings["prediction"] == "x0" and model.settings["x0_min_t"] == 0.05
    z = torch.randn(1, 96, 6, 8, 8)
    emb = model.text_encoder.encode(["a red ball moving right"])
    with torch.no_grad():
        out = model.transformer(z, torch.tensor([500.0]), emb, return_dict=False)[0]
        assert torch.allclose(out, tr.eval()(z, torch.tensor([500.0]), emb, return_dict=False)[0], atol=1e-5)
    sched = json.loads((tmp_path / "m" / "scheduler" / "scheduler_config.json").read_text())
    assert sched["_class_name"] == "FlowMatchEulerDiscreteScheduler" and sched["shift"] == 1.0


def test_shipped_model_loads_and_x0_step_runs():
    path = default_model_dir()
    size = sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
    assert size < 8 * 2**20
    settings = json.loads((path / "dualpar.json").read_text())
    assert (settings["block_latents"], settings["context_latents"], settings["steps"]) == (4, 2, 25)
    tr = WanTransformer3DModel.from_pretrained(str(path / "transformer")).eval()
    assert (tr.config.in_channels, tr.config.out_channels, tr.config.num_layers) == (96, 96, 6)
    codec = SpaceToDepthCodec.from_pretrained(path / "vae")
    enc = WordPromptEncoder.from_pretrained(path)
    emb = enc.encode([settings["default_prompt"], settings["negative_prompt"]])
    assert emb.shape == (2, enc.tokenizer.max_length, enc.dim)
    z = torch.randn(2, codec.z_dim, 8, 8, 8, generator=torch.Generator().manual_seed(0))
    t = torch.ones(2)
    with torch.no_grad():
        v = predict_flow(tr, z, t, emb, settings["x0_min_t"])
        x0 = z - v  # at t = 1 the flow step lands on the x0 prediction
    assert v.shape == z.shape and torch.isfinite(v).all()
    pixels = codec.decode(x0).clamp(-1, 1)
    assert pixels.shape == (2, 3, 16, 32, 32)
    assert float(pixels.median()) < -0.6  # a trained model predicts a mostly dark background from pure noise


def test_shipped_model_samples_caption_colours():
    model = read_model_dir(default_model_dir())
    prompts = ["a red ball moving right", "a blue square moving up", "a yellow ball moving left",
               "a green square moving down"]
    cond = model.text_encoder.encode(prompts)
    uncond = model.text_encoder.encode([""])
    z = sample_euler(model.transformer, cond, uncond, (96, 8, 8, 8), steps=12, guidance=3.0,
                     generator=torch.Generator().manual_seed(0))
    video = model.codec.decode(z)
    colour_hits, counts = [], []
    for i, prompt in enumerate(prompts):
        blobs = detect_objects(to_uint8_frames(video[i:i + 1]))
        counts += [len(b) for b in blobs]
        colour_hits += [b.colour in prompt for frame in blobs for b in frame]
    assert 0.75 <= np.mean(counts) <= 1.6  # one object asked for; the shipped model gives about 1.05-1.1
    assert np.mean(colour_hits) >= 0.9


def test_directory_model_keeps_its_name_and_reads_dualpar_json_defaults():
    from dualpar.models.registry import packaged_model_dir, read_model_info

    info = read_model_info("toyworld", None, 0)
    assert info.name == "toyworld"  # dualpar.json's keys must not leak into the model's name
    extra = json.loads((packaged_model_dir("toyworld") / "dualpar.json").read_text())
    frames = extra.get("default_frames", extra.get("frames"))
    assert frames is not None and info.defaults["frames"] == frames
