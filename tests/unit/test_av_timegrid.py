"""TimeGrid and window layout: exact partitions, NTSC rates, hours without drift, never a float."""

from __future__ import annotations

import math
from fractions import Fraction

import pytest

from dualpar.av.timegrid import TimeGrid, as_fraction
from dualpar.av.window import av_window
from dualpar.schedule.blockwise import BlockGeometry, blocks_for_latents

NTSC = Fraction(30000, 1001)


def geometry_for(frames: int, p: int, c: int, stride: int = 4) -> BlockGeometry:
    latents = 1 + math.ceil((frames - 1) / stride)
    return BlockGeometry(p, c, blocks_for_latents(latents, p, c))


def test_spec_numbers():
    g = TimeGrid(Fraction(16), 16000, 500)
    assert g.audio_per_latent() == 8 and g.aligned
    assert g.lead_in() == Fraction(3, 16) and g.codec_offset() == 3000
    assert g.latent_span(0) == (Fraction(-3, 16), Fraction(1, 16))  # frame 0 at t = 0 is latent 0's last frame
    assert g.latent_span(1) == (Fraction(1, 16), Fraction(5, 16))  # frames 1..4
    assert g.audio_span(0) == (Fraction(-3, 16), Fraction(-3, 16) + Fraction(1, 32))
    geo = BlockGeometry(10, 5, 4)
    assert g.block_audio_latents(0, geo) == range(0, 120)
    assert g.block_audio_latents(1, geo) == range(120, 200)
    assert g.window_audio_latents(1, geo) == range(80, 200)
    assert g.cached_audio_latents(1, geo) == range(120, 160)
    oob = TimeGrid(Fraction(16), 44100, 2048)
    assert not oob.aligned and oob.slots(15) == math.ceil(15 * oob.audio_per_latent())
    assert TimeGrid(Fraction(16), 16000, 640).audio_per_latent() == Fraction(25, 4)  # 25 Hz: A = 6.25


@pytest.mark.parametrize("fps", [Fraction(16), Fraction(24), NTSC])
@pytest.mark.parametrize("sr,hop", [(16000, 500), (44100, 2048), (48000, 960), (16000, 640)])
def test_blocks_partition_samples_and_latents(fps, sr, hop):
    g = TimeGrid(fps, sr, hop)
    for p, c, frames in [(10, 5, 401), (3, 0, 250), (4, 4, 97)]:
        check_partition(g, geometry_for(frames, p, c), frames)


def check_partition(g: TimeGrid, geo: BlockGeometry, frames: int) -> None:
    total = g.total_samples(frames)
    assert total == math.ceil(Fraction(frames * g.sample_rate) / g.fps)
    pos, audio_pos = 0, 0
    for k in range(geo.n_blocks):
        s0, s1 = g.block_samples(k, geo, frames)
        assert s0 == pos and s1 >= s0
        pos = s1
        own = g.block_audio_latents(k, geo)
        assert own.start == audio_pos and len(own) <= g.slots(len(geo.own_range(k)))
        audio_pos = own.stop
        if k < 3:
            win = av_window(g, geo, k)
            assert len(win.audio) <= win.audio_slots == g.slots(geo.window_latents)
            assert len(win.audio_u) == win.audio_slots + len(win.cached_audio)
    assert pos == total
    # every audio latent belongs to the video latent holding its centre
    big_a = g.audio_per_latent()
    for j in range(0, audio_pos, 7):
        i = math.floor((j + Fraction(1, 2)) / big_a)
        assert j in g.audio_of_latents(i, i + 1)


def test_ten_hours_ntsc_no_drift():
    g = TimeGrid(NTSC, 48000, 960)
    frames = math.ceil(10 * 3600 * NTSC)
    geo = geometry_for(frames, 10, 5)
    assert geo.n_blocks > 26_000
    pos = 0
    for k in range(geo.n_blocks):
        s0, s1 = g.block_samples(k, geo, frames)
        assert s0 == pos
        pos = s1
    assert pos == g.total_samples(frames) == math.ceil(Fraction(frames * 48000) / NTSC)
    last = geo.n_blocks - 1
    t1 = g.latent_span(geo.own_range(last).stop - 1)[1]
    assert isinstance(t1, Fraction) and t1 >= Fraction(frames) / NTSC


def test_hundred_thousand_blocks_aligned():
    g = TimeGrid(Fraction(16), 16000, 500)
    geo = BlockGeometry(10, 5, 100_000)
    k = geo.n_blocks - 1
    s0, s1 = g.block_samples(k, geo, total_frames=4 * (geo.total_latents - 1) + 1)
    a = g.block_audio_latents(k, geo)
    assert a == range(8 * (k * 10 + 5), 8 * ((k + 1) * 10 + 5))
    assert (s0, s1) == (a.start * 500 - 3000, a.stop * 500 - 3000)  # the lead-in, exactly


def test_window_positions_share_one_clock():
    g = TimeGrid(Fraction(16), 16000, 500)
    geo = BlockGeometry(4, 2, 5)
    win = av_window(g, geo, 2)
    assert win.video == range(8, 14) and win.cached_video == range(14, 16)
    assert win.video_u == tuple(Fraction(i) for i in range(8))  # window then cached: 0..P+2C-1
    assert win.store_video == range(2, 4) and win.store_audio == range(16, 32)
    assert win.audio_u[0] == Fraction(1, 16) - Fraction(1, 2)
    for j_local, u in enumerate(win.audio_u):
        j = win.audio.start + j_local
        t0, t1 = g.audio_span(j)
        assert u == g.rope_time((t0 + t1) / 2) - win.video.start
    # block 0 stores its first C own latents, which start at the window's start
    assert av_window(g, geo, 0).store_video == range(0, 2)


def test_padded_window_masks():
    g = TimeGrid(Fraction(16), 16000, 640)  # A = 25/4
    geo = BlockGeometry(3, 1, 6)
    for k in range(geo.n_blocks):
        win = av_window(g, geo, k)
        valid = win.audio_valid()
        assert valid.shape[0] == win.audio_slots + len(win.cached_audio)
        assert int(valid[:win.audio_slots].sum()) == len(win.audio)
        assert win.audio_positions().shape == valid.shape


def test_exact_types():
    assert as_fraction("30000/1001") == NTSC
    with pytest.raises(ValueError):
        as_fraction(29.97)
    with pytest.raises(ValueError):
        TimeGrid(Fraction(0), 16000, 500)
    g = TimeGrid("30000/1001", 44100, 2048)  # type: ignore[arg-type]
    assert isinstance(g.fps, Fraction) and isinstance(g.audio_per_latent(), Fraction)
