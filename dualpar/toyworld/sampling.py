"""The x0-to-flow wrapper and a plain Euler sampler for the toy model.

It exists so the trainer, its sample previews and the tests share one definition of how the toy transformer's
raw output (an x0 prediction) becomes a Wan-style flow velocity, matching what the engine does when
`dualpar.json` says `"prediction": "x0"`.

Legend: B batch, C latent channels, F latent frames, H/W latent rows/columns, L text tokens, D text width.
"""

from __future__ import annotations

import torch


def x0_to_flow(z_t_BCFHW: torch.Tensor, x0_BCFHW: torch.Tensor, t_B: torch.Tensor,
               min_t: float = 0.05) -> torch.Tensor:
    """Flow velocity v = (z_t - x0) / max(t, min_t) for z_t = (1 - t) x0 + t eps (so v = eps - x0)."""
    return (z_t_BCFHW - x0_BCFHW) / t_B.clamp(min=min_t).view(-1, 1, 1, 1, 1)


def predict_flow(transformer: torch.nn.Module, z_t_BCFHW: torch.Tensor, t_B: torch.Tensor,
                 text_BLD: torch.Tensor, min_t: float = 0.05) -> torch.Tensor:
    """Run the x0-predicting Wan transformer (timestep t * 1000) and return the flow velocity."""
    x0 = transformer(z_t_BCFHW, t_B * 1000.0, text_BLD, return_dict=False)[0]
    return x0_to_flow(z_t_BCFHW, x0, t_B, min_t)


@torch.no_grad()
def sample_euler(transformer: torch.nn.Module, cond_BLD: torch.Tensor, uncond_BLD: torch.Tensor,
                 latent_shape: tuple[int, int, int, int], steps: int = 25, guidance: float = 3.0,
                 generator: torch.Generator | None = None, min_t: float = 0.05) -> torch.Tensor:
    """Text-to-video latents [B, C, F, H, W] with Euler steps on sigmas linspace(1, 0) and batched CFG."""
    b = cond_BLD.shape[0]
    z = torch.randn((b, *latent_shape), generator=generator)
    sigmas = torch.linspace(1.0, 0.0, steps + 1)
    use_cfg = guidance != 1.0
    text = torch.cat([cond_BLD, uncond_BLD.expand(b, -1, -1)]) if use_cfg else cond_BLD
    for i in range(steps):
        t = float(sigmas[i])
        zin = torch.cat([z, z]) if use_cfg else z
        v = predict_flow(transformer, zin, torch.full((zin.shape[0],), t), text, min_t)
        if use_cfg:
            v_c, v_u = v.chunk(2)
            v = v_u + guidance * (v_c - v_u)
        z = z + (float(sigmas[i + 1]) - t) * v
    return z
