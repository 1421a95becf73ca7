"""RoPE on one physical clock for audio tokens and for both cross-modal directions (AUDIO_VIDEO.md section 4).

Video self-attention keeps Wan's 3-D RoPE (integer window-local positions), so pretrained weights still fit.
Audio self-attention and the fusion attentions rotate only Wan's temporal sub-band (head_dim - 4*floor(head_dim/6)
dims, theta 1e4) by a float time position u in latent-frame units (`TimeGrid.rope_time`); the height and width
sub-bands get angle 0 (cos 1, sin 0). Tables come from positions on the fly: no length cap. For an integer
u the temporal band equals Wan's own table, so a video latent sits where Wan's RoPE puts it.

Legend: B batch, S tokens, L positions, H heads, D head_dim; tokens are position-major, `repeat` tokens per
position (tpf for video latent frames, 1 for audio latents).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from dualpar.models.rope import apply_rope


def temporal_dims(head_dim: int) -> int:
    """Width of Wan's temporal RoPE sub-band (the first dims of every head)."""
    return head_dim - 4 * (head_dim // 6)


def time_rope_tables(u_L: torch.Tensor, head_dim: int, theta: float = 10000.0) -> tuple[torch.Tensor, torch.Tensor]:
    """cos, sin float32 [L, head_dim] in Wan's interleaved layout; only the temporal band rotates."""
    t_dim = temporal_dims(head_dim)
    freqs = 1.0 / (theta ** (torch.arange(0, t_dim, 2, dtype=torch.float64) / t_dim))
    angles_LF = torch.outer(u_L.to(torch.float64), freqs)
    cos_t = angles_LF.cos().repeat_interleave(2, dim=1).float()
    sin_t = angles_LF.sin().repeat_interleave(2, dim=1).float()
    n = u_L.shape[0]
    rest = head_dim - t_dim
    cos = torch.cat([cos_t, torch.ones(n, rest, dtype=torch.float32)], dim=1)
    sin = torch.cat([sin_t, torch.zeros(n, rest, dtype=torch.float32)], dim=1)
    return cos, sin


@dataclass(frozen=True)
class TimeRope:
    """A temporal-only RoPE table for a token sequence (window tokens first, cached tokens after).

    Queries use the first positions, keys as many as they have (window, or window plus cache), because cached
    positions continue the window's."""

    cos_LD: torch.Tensor
    sin_LD: torch.Tensor
    repeat: int = 1

    @classmethod
    def from_positions(
        cls, u_L: torch.Tensor, head_dim: int, repeat: int = 1, device: torch.device | str | None = None
    ) -> TimeRope:
        cos, sin = time_rope_tables(u_L, head_dim)
        return cls(cos.to(device), sin.to(device), repeat)

    @property
    def tokens(self) -> int:
        return self.cos_LD.shape[0] * self.repeat

    def __call__(self, x_BSHD: torch.Tensor) -> torch.Tensor:
        if x_BSHD.shape[1] > self.tokens:
            raise ValueError(f"{x_BSHD.shape[1]} tokens but the table covers {self.tokens}")
        return apply_rope(x_BSHD, self.cos_LD, self.sin_LD, self.repeat)

    def wan_tables(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(cos, sin) as [1, S, 1, D] for diffusers' Wan attention processors (repeat expanded)."""
        cos = self.cos_LD.repeat_interleave(self.repeat, dim=0)
        sin = self.sin_LD.repeat_interleave(self.repeat, dim=0)
        return cos[None, :, None, :], sin[None, :, None, :]
