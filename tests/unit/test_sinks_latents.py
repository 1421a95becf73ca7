"""LatentsWriter: a block-by-block safetensors file loads exactly and never appears half written."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from dualpar.sinks.latents import LatentsWriter

torch.set_num_threads(1)
SHAPE = (1, 4, 13, 6, 10)  # [B, C, F, h, w]


def blocks(full_BCFHW: torch.Tensor, sizes: list[int]) -> list[tuple[int, torch.Tensor]]:
    out, start = [], 0
    for size in sizes:
        out.append((start, full_BCFHW[:, :, start : start + size]))
        start += size
    return out


def test_blocks_out_of_order_load_exactly(tmp_path):
    full_BCFHW = torch.randn(SHAPE, generator=torch.Generator().manual_seed(0))
    path = tmp_path / "latents.safetensors"
    writer = LatentsWriter(path, SHAPE, metadata={"fps": "16", "model": "tiny"})
    parts = blocks(full_BCFHW, [1, 3, 3, 3, 3])
    for start, block in [parts[2], parts[0], parts[4], parts[1]]:
        writer.write_frames(start, block)
        assert not path.exists()  # only the .tmp exists until close()
    with pytest.raises(ValueError, match=r"never written \(first \[7, 8, 9\]\)"):
        writer.close()
    start, block = parts[3]
    writer.write_frames(start, block.numpy())  # numpy is accepted as well
    assert writer.written_prefix == 13
    assert writer.close() == path and not writer.tmp_path.exists()

    loaded = load_file(path)
    assert list(loaded) == ["latents"]
    assert loaded["latents"].dtype == torch.float32
    assert torch.equal(loaded["latents"], full_BCFHW)
    with safe_open(str(path), framework="pt") as f:
        assert f.metadata() == {"fps": "16", "model": "tiny"}
    header_len = int.from_bytes(path.read_bytes()[:8], "little")
    assert header_len % 8 == 0
    assert json.loads(path.read_bytes()[8 : 8 + header_len])["latents"]["shape"] == list(SHAPE)


def test_resume_after_crash_and_bad_blocks(tmp_path):
    full_BCFHW = torch.randn(SHAPE, generator=torch.Generator().manual_seed(1))
    path = tmp_path / "z.safetensors"
    writer = LatentsWriter(path, SHAPE)
    with pytest.raises(ValueError, match=r"shape \[1, 4, F, 6, 10\]"):
        writer.write_frames(0, torch.zeros(1, 3, 2, 6, 10))
    with pytest.raises(ValueError, match="outside"):
        writer.write_frames(12, full_BCFHW[:, :, :2])
    writer.write_frames(0, full_BCFHW[:, :, :5])
    writer.write_frames(8, full_BCFHW[:, :, 8:10])  # written after the checkpoint: rewritten on resume
    checkpoint = writer.written_prefix
    assert checkpoint == 5
    del writer  # crash: the fd is dropped, the .tmp stays

    with pytest.raises(ValueError, match="another shape"):
        LatentsWriter(path, SHAPE, metadata={"x": "1"}, resume_frames=checkpoint)
    writer = LatentsWriter(path, SHAPE, resume_frames=checkpoint)
    assert writer.frames_written == 5
    writer.write_frames(5, full_BCFHW[:, :, 5:])
    writer.close()
    assert torch.equal(load_file(path)["latents"], full_BCFHW)

    aborted = LatentsWriter(tmp_path / "a.safetensors", SHAPE)
    aborted.abort()
    assert list(tmp_path.iterdir()) == [path]
    np.testing.assert_array_equal(load_file(path)["latents"].numpy(), full_BCFHW.numpy())
