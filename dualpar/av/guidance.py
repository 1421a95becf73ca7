"""Per-modality classifier-free guidance and optional sync guidance (AUDIO_VIDEO.md section 5).

On the last stage both towers' velocities come out of one batch: rows (cond, uncond) and, with sync
guidance, a third row that runs the cond prompt with fusion strength 0. Each modality gets its own scale
(Ovi used 4.0 for video and 3.0 for audio); sync guidance pushes both away from the no-fusion prediction
(LTX-2's modality guidance, about 3). At zero-initialised fusion the sync term is exactly zero.
"""

from __future__ import annotations

import torch


def guided(cond: torch.Tensor, uncond: torch.Tensor, scale: float, no_fusion: torch.Tensor | None = None,
           sync_scale: float | None = None) -> torch.Tensor:
    """uncond + scale (cond - uncond) [+ (sync_scale - 1)(cond - no_fusion)], in float32."""
    c, u = cond.float(), uncond.float()
    out = u + scale * (c - u)
    if sync_scale is not None:
        if no_fusion is None:
            raise ValueError("sync guidance needs the no-fusion row")
        out = out + (sync_scale - 1.0) * (c - no_fusion.float())
    return out


def fusion_strength(rows: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """Per-row fusion strength: 1 for cond and uncond, 0 for the third (no-fusion) row when present."""
    if rows not in (1, 2, 3):
        raise ValueError(f"guidance batches have 1, 2 or 3 rows, got {rows}")
    return torch.tensor([1.0, 1.0, 0.0][:rows], device=device)
