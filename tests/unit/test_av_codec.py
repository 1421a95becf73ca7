"""Audio codecs: tiny codec exactness, Oobleck streaming error bound, block-by-block soundtrack on the clock."""

from __future__ import annotations

import math
from fractions import Fraction

import pytest
import torch

from dualpar.av.codec import TinyAudioCodec, TinyCodecConfig
from dualpar.av.oobleck import OobleckCodec, decoder_cone, oobleck_margins
from dualpar.av.stream import AudioTrack
from dualpar.av.timegrid import TimeGrid
from dualpar.schedule.blockwise import BlockGeometry

torch.set_num_threads(1)

TINY_OOBLECK = {"encoder_hidden_size": 4, "downsampling_ratios": [2, 4], "channel_multiples": [1, 2],
                "decoder_channels": 4, "decoder_input_channels": 8, "audio_channels": 1, "sampling_rate": 16000}


def stream_in_chunks(codec, z_BCN: torch.Tensor, sizes: list[int]) -> torch.Tensor:
    dec, outs, pos = codec.stream_decoder(), [], 0
    for n in sizes:
        outs.append(dec.decode(z_BCN[:, :, pos:pos + n]))
        pos += n
    outs.append(dec.flush())
    return torch.cat(outs, dim=2)


def test_tiny_codec_roundtrip_and_exact_stream(tmp_path):
    codec = TinyAudioCodec()
    assert (codec.sample_rate, codec.hop, codec.latent_channels, codec.channels) == (16000, 500, 16, 1)
    z = torch.randn(2, 16, 37, generator=torch.Generator().manual_seed(0))
    wav = codec.decode(z)
    assert wav.shape == (2, 1, 37 * 500) and wav.dtype == torch.float32
    torch.testing.assert_close(codec.encode(wav), z, atol=1e-5, rtol=0)
    for sizes in ([37], [1] * 37, [5, 11, 3, 18]):
        assert torch.equal(stream_in_chunks(codec, z, sizes), wav)
    codec.save_pretrained(tmp_path / "tiny")
    again = TinyAudioCodec.from_pretrained(tmp_path / "tiny")
    assert again.config == codec.config and torch.equal(again.decode(z), wav)
    stereo = TinyAudioCodec(TinyCodecConfig(sample_rate=44100, hop=441, channels=2, latent_channels=8))
    w2 = torch.randn(1, 2, 441 * 3)
    assert stereo.decode(stereo.encode(w2)).shape == w2.shape
    with pytest.raises(ValueError):
        TinyCodecConfig(latent_channels=15, channels=2)


@pytest.mark.parametrize("fps,p,c", [(Fraction(16), 3, 1), (Fraction(16), 2, 0)])
def test_track_writes_block_samples_exactly(fps, p, c):
    codec = TinyAudioCodec()
    grid = TimeGrid(fps, codec.sample_rate, codec.hop)
    geo = BlockGeometry(p, c, 4)
    frames = 4 * (geo.total_latents - 1) + 1 - 3  # the last block is partly trimmed
    z = torch.randn(1, 16, grid.block_audio_latents(geo.n_blocks - 1, geo).stop)
    one_shot = codec.decode(z)[:, :, grid.codec_offset():grid.codec_offset() + grid.total_samples(frames)]
    track, outs = AudioTrack(codec, grid, frames), []
    for k in range(geo.n_blocks):
        own = grid.block_audio_latents(k, geo)
        out = track.push(z[:, :, own.start:own.stop])
        s0, s1 = grid.block_samples(k, geo, frames)
        assert out.shape[2] == s1 - s0
        outs.append(out)
    assert track.flush().shape[2] == 0 and track.done
    assert torch.equal(torch.cat(outs, dim=2), one_shot)


def tiny_oobleck(tmp_path):
    from diffusers import AutoencoderOobleck

    torch.manual_seed(0)
    AutoencoderOobleck(**TINY_OOBLECK).save_pretrained(tmp_path / "oobleck")
    return OobleckCodec.from_pretrained(tmp_path / "oobleck")


def test_oobleck_cone_matches_gradients(tmp_path):
    codec = tiny_oobleck(tmp_path)
    hop, n = codec.hop, 64
    z = torch.randn(1, 8, n, requires_grad=True)
    sample = 30 * hop + 5
    codec.vae.decode(z).sample[0, 0, sample].backward()
    touched = (z.grad.abs().sum(1)[0] > 0).nonzero().flatten()
    lo, hi, rate = decoder_cone(TINY_OOBLECK["downsampling_ratios"][::-1], sample)[-1]
    assert rate == 1 and (int(touched.min()), int(touched.max())) == (lo, hi)


def test_oobleck_stream_error_bound(tmp_path):
    codec = tiny_oobleck(tmp_path)
    assert (codec.lookback, codec.lookahead) == oobleck_margins([4, 2]) == (19, 19)
    assert oobleck_margins([8, 8, 4, 4, 2]) == (10, 10)  # Stable Audio: 10 latents = 0.46 s each side
    z = torch.randn(1, 8, 120, generator=torch.Generator().manual_seed(1))
    ref = codec.decode(z)
    sizes = [17, 40, 9, 30, 24]
    streamed = stream_in_chunks(codec, z, sizes)
    assert streamed.shape == ref.shape
    exact_err = float((streamed - ref).abs().max())
    assert exact_err <= 1e-5 * float(ref.abs().max())
    short = OobleckCodec(codec.vae, lookback=4, lookahead=4)  # inside the cone: the seams show
    short_err = float((stream_in_chunks(short, z, sizes) - ref).abs().max())
    assert short_err > 100 * max(exact_err, 1e-9)
    # streaming emits a latent only once `lookahead` later latents exist
    dec = codec.stream_decoder()
    assert dec.decode(z[:, :, :19]).shape[2] == 0
    assert dec.decode(z[:, :, 19:21]).shape[2] == 2 * codec.hop
    state = dec.state_dict()
    resumed = codec.stream_decoder()
    resumed.load_state_dict(state)
    a, b = dec.decode(z[:, :, 21:60]), resumed.decode(z[:, :, 21:60])
    assert torch.equal(a, b)


def test_track_padded_oobleck_grid(tmp_path):
    codec = tiny_oobleck(tmp_path)  # hop 8 at 16 kHz: A = 4*16000/(16*8) = 500 per latent; use 7 fps
    grid = TimeGrid(Fraction(30000, 1001), codec.sample_rate, codec.hop)
    assert not grid.aligned
    geo = BlockGeometry(1, 1, 3)
    frames = 4 * (geo.total_latents - 1) + 1
    n_audio = grid.block_audio_latents(geo.n_blocks - 1, geo).stop
    z = torch.randn(1, 8, n_audio)
    track = AudioTrack(codec, grid, frames)
    outs = [track.push(z[:, :, r.start:r.stop]) for r in
            (grid.block_audio_latents(k, geo) for k in range(geo.n_blocks))]
    outs.append(track.flush())
    got = torch.cat(outs, dim=2)
    skip = grid.codec_offset()
    assert skip == math.floor(Fraction(3 * 1001, 30000) * 16000)
    ref = codec.decode(z)[:, :, skip:skip + grid.total_samples(frames)]
    assert got.shape == ref.shape
    assert float((got - ref).abs().max()) <= 1e-5 * float(ref.abs().max())
