"""Wan's causal VAE as a streaming latent codec: finished blocks decode one by one through its cache.

Per latent frame this runs the same calls as AutoencoderKLWan._decode (post_quant_conv is 1x1x1, so it is
applied per chunk), keeping `_feat_map` between chunks; the stream equals a one-shot decode. It touches the
VAE's private cache attributes, so diffusers is pinned and an equivalence test guards it.
"""

from __future__ import annotations

import torch


class WanVAEStreamDecoder:
    """Decodes consecutive latent chunks of one video with the VAE's causal cache."""

    def __init__(self, vae):
        self.vae = vae
        self.first = True
        cfg = vae.config
        self.mean = torch.tensor(cfg.latents_mean).view(1, cfg.z_dim, 1, 1, 1)
        self.inv_std = 1.0 / torch.tensor(cfg.latents_std).view(1, cfg.z_dim, 1, 1, 1)
        vae.clear_cache()

    @torch.no_grad()
    def decode(self, latents_BCFHW: torch.Tensor) -> torch.Tensor:
        vae = self.vae
        dev = next(vae.parameters()).device
        z = latents_BCFHW.to(device=dev, dtype=torch.float32)
        z = z / self.inv_std.to(dev) + self.mean.to(dev)
        x = vae.post_quant_conv(z)
        outs = []
        for i in range(x.shape[2]):
            vae._conv_idx = [0]
            outs.append(
                vae.decoder(
                    x[:, :, i : i + 1],
                    feat_cache=vae._feat_map,
                    feat_idx=vae._conv_idx,
                    first_chunk=self.first,
                )
            )
            self.first = False
        out = torch.cat(outs, dim=2)
        if vae.config.patch_size is not None:
            from diffusers.models.autoencoders.autoencoder_kl_wan import unpatchify

            out = unpatchify(out, patch_size=vae.config.patch_size)
        return torch.clamp(out, min=-1.0, max=1.0).float().cpu()

    def state_dict(self) -> dict:
        """The causal cache between chunks (the VAE's private `_feat_map`: tensors, None or "Rep") as CPU data."""
        cache = [x.detach().cpu().clone() if torch.is_tensor(x) else x for x in self.vae._feat_map]
        return {"feat_map": cache, "first": self.first}

    def load_state_dict(self, state: dict) -> None:
        device = next(self.vae.parameters()).device
        self.vae._feat_map = [x.to(device) if torch.is_tensor(x) else x for x in state["feat_map"]]
        self.first = bool(state["first"])

    def close(self) -> None:
        self.vae.clear_cache()


class WanVAECodec:
    """AutoencoderKLWan behind the LatentCodec interface (4x temporal, 8x spatial, causal first frame)."""

    causal_first_frame = True

    def __init__(self, vae):
        self.vae = vae
        cfg = vae.config
        self.z_dim = int(cfg.z_dim)
        self.temporal_stride = 2 ** sum(bool(d) for d in cfg.temperal_downsample)
        self.spatial_stride = 2 ** len(cfg.temperal_downsample) * int(cfg.patch_size or 1)

    def stream_decoder(self) -> WanVAEStreamDecoder:
        return WanVAEStreamDecoder(self.vae)
