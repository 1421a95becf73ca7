"""Streaming safetensors output for the full latent video, written block by block with flat memory.

The file must hold one tensor `latents` of shape [B, C, F, h, w] (channel-major), but the engine finishes
frames block by block, so a block's frames are strided across every channel. Since the full shape is known
up front, the header (8-byte little-endian length + JSON with `data_offsets`, per the safetensors format)
is written first, the data region is preallocated, and each block is written in place: one contiguous run
of bytes per (batch, channel). The file lives at `path + ".tmp"` until every frame is written and `close()`
renames it, so a partial file never sits at the final path.

Legend: B = batch, C = latent channels (z_dim), F = latent frames, h/w = latent height/width.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

TENSOR_NAME = "latents"
_DTYPE = np.dtype("<f4")


def safetensors_header(shape: tuple[int, ...], metadata: dict[str, str] | None = None) -> bytes:
    """The 8-byte length plus JSON header for one float32 tensor `latents`, padded to 8-byte alignment."""
    nbytes = int(np.prod(shape)) * _DTYPE.itemsize
    header: dict[str, Any] = {}
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    header[TENSOR_NAME] = {"dtype": "F32", "shape": list(shape), "data_offsets": [0, nbytes]}
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)  # the format allows trailing spaces; aligned data is friendlier to mmap
    return len(text).to_bytes(8, "little") + text


class LatentsWriter:
    """Writes `latents` [B, C, F, h, w] float32 to a safetensors file frame block by frame block.

    `resume_frames=n` reopens an existing `.tmp` file of the same shape after a crash and counts frames
    [0, n) as already written (take n from the checkpoint, e.g. `written_prefix` at checkpoint time). A crash
    after `close()` renamed the file is resumed the same way: the final file is moved back to `.tmp`.
    """

    def __init__(
        self,
        path: Path | str,
        shape: tuple[int, int, int, int, int],
        metadata: dict[str, str] | None = None,
        resume_frames: int = 0,
    ):
        shape = tuple(int(s) for s in shape)
        if len(shape) != 5 or min(shape) < 1:
            raise ValueError(f"shape must be 5 positive sizes [B, C, F, h, w], got {shape}")
        if not 0 <= resume_frames <= shape[2]:
            raise ValueError(f"resume_frames must be in [0, F={shape[2]}], got {resume_frames}")
        self.path = Path(path)
        self.tmp_path = self.path.with_name(self.path.name + ".tmp")
        self.shape = shape
        header = safetensors_header(shape, metadata)
        self.data_start = len(header)
        self.size = self.data_start + int(np.prod(shape)) * _DTYPE.itemsize
        self.written = np.zeros(shape[2], dtype=bool)
        if resume_frames:
            self._reopen(header)
            self.written[:resume_frames] = True
        else:
            self._fd = os.open(self.tmp_path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
            _pwrite_all(self._fd, memoryview(header), 0)
            self._preallocate()
        self.closed = False

    def _reopen(self, header: bytes) -> None:
        if not self.tmp_path.is_file() and self.path.is_file():
            # close() renamed it before a crash later in finishing: the file is complete, continue in it
            os.replace(self.path, self.tmp_path)
        if not self.tmp_path.is_file():
            raise FileNotFoundError(
                f"resume_frames needs {self.tmp_path} from the crashed run; pass resume_frames=0 to restart"
            )
        self._fd = os.open(self.tmp_path, os.O_RDWR)
        if os.pread(self._fd, len(header), 0) != header or os.fstat(self._fd).st_size != self.size:
            os.close(self._fd)
            raise ValueError(f"{self.tmp_path} has another shape or metadata; pass resume_frames=0 to start over")

    def _preallocate(self) -> None:
        # Reserve the blocks now so a full disk fails at the start, not hours into a render.
        if hasattr(os, "posix_fallocate"):
            try:
                os.posix_fallocate(self._fd, 0, self.size)
                return
            except OSError:
                pass  # some filesystems refuse fallocate; a sparse file works as well
        os.ftruncate(self._fd, self.size)

    @property
    def frames_written(self) -> int:
        return int(self.written.sum())

    @property
    def written_prefix(self) -> int:
        """Number of leading frames that are all written: safe to checkpoint as `resume_frames`."""
        missing = np.flatnonzero(~self.written)
        return int(missing[0]) if len(missing) else self.shape[2]

    def write_frames(self, start_frame: int, latents_BCFHW: Any) -> None:
        """Write frames [start_frame, start_frame + F) of every batch entry and channel."""
        if self.closed:
            raise RuntimeError(f"{self.path.name}: write_frames after close()")
        if hasattr(latents_BCFHW, "detach"):  # a torch tensor; torch is not imported here
            latents_BCFHW = latents_BCFHW.detach().float().cpu().numpy()
        block_BCFHW = np.ascontiguousarray(latents_BCFHW, dtype=_DTYPE)
        b, c, f_total, h, w = self.shape
        if block_BCFHW.ndim != 5 or block_BCFHW.shape[:2] != (b, c) or block_BCFHW.shape[3:] != (h, w):
            raise ValueError(f"latents_BCFHW must have shape [{b}, {c}, F, {h}, {w}], got {block_BCFHW.shape}")
        frames = block_BCFHW.shape[2]
        if start_frame < 0 or start_frame + frames > f_total:
            raise ValueError(
                f"frames [{start_frame}, {start_frame + frames}) fall outside [0, F={f_total}); "
                "check start_frame against the latent frame count"
            )
        frame_bytes = h * w * _DTYPE.itemsize
        for bi in range(b):
            for ci in range(c):
                offset = self.data_start + ((bi * c + ci) * f_total + start_frame) * frame_bytes
                _pwrite_all(self._fd, block_BCFHW[bi, ci].data, offset)
        self.written[start_frame : start_frame + frames] = True

    def close(self) -> Path:
        """Fsync and rename to the final path; every frame must have been written."""
        if self.closed:
            return self.path
        if not self.written.all():
            missing = np.flatnonzero(~self.written)
            raise ValueError(
                f"{self.path.name}: {len(missing)} latent frames never written "
                f"(first {missing[:8].tolist()}); "
                "write them before close(), or abort()"
            )
        os.fsync(self._fd)
        os.close(self._fd)
        os.replace(self.tmp_path, self.path)
        self.closed = True
        return self.path

    def abort(self) -> None:
        """Close and delete the partial file."""
        if not self.closed:
            os.close(self._fd)
            self.closed = True
        self.tmp_path.unlink(missing_ok=True)

    def __enter__(self) -> LatentsWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        elif not self.closed:  # keep the .tmp for resume_frames
            os.close(self._fd)
            self.closed = True


def _pwrite_all(fd: int, data: memoryview, offset: int) -> None:
    view = data.cast("B")
    while view:  # pwrite may write less than asked (Linux caps one call near 2 GiB)
        done = os.pwrite(fd, view, offset)
        view, offset = view[done:], offset + done
