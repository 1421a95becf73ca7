"""Space-time-to-depth codec: exact inverse, chunked stream decode, config round trip."""

import torch

from dualpar.models.codec import latents_for_frames, pixel_frames
from dualpar.toyworld.codec import SpaceToDepthCodec


def test_round_trip_exact_and_shapes():
    codec = SpaceToDepthCodec()
    assert (codec.z_dim, codec.temporal_stride, codec.spatial_stride) == (96, 2, 4)
    assert codec.causal_first_frame is False
    video = torch.rand(2, 3, 16, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1
    z = codec.encode(video)
    assert z.shape == (2, 96, 8, 8, 8)
    assert torch.equal(codec.decode(z), video)
    # a latent frame holds exactly its 2 pixel frames
    assert torch.equal(codec.decode(z[:, :, 3:4]), video[:, :, 6:8])
    assert pixel_frames(codec, 8) == 16 and latents_for_frames(2, False, 15) == 8


def test_stream_decode_in_chunks_equals_one_shot():
    codec = SpaceToDepthCodec()
    z = torch.randn(1, 96, 10, 8, 8, generator=torch.Generator().manual_seed(1))
    dec = codec.stream_decoder()
    chunks = torch.cat([dec.decode(z[:, :, a:b]) for a, b in [(0, 6), (6, 8), (8, 10)]], dim=2)
    assert torch.equal(chunks, codec.decode(z))


def test_normalisation_and_save_load(tmp_path):
    codec = SpaceToDepthCodec(scale=2.0, shift=-0.5)
    codec.save_pretrained(tmp_path / "vae")
    loaded = SpaceToDepthCodec.from_pretrained(tmp_path / "vae")
    assert (loaded.scale, loaded.shift, loaded.z_dim) == (2.0, -0.5, 96)
    video = torch.rand(1, 3, 4, 8, 8) * 2 - 1
    assert torch.allclose(loaded.decode(loaded.encode(video)), video, atol=1e-6)
    assert torch.allclose(loaded.encode(video), (SpaceToDepthCodec().encode(video) + 0.5) * 2.0)
