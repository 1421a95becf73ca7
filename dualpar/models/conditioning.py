"""Image conditioning of block 0: Wan2.2 TI2V-5B's first-frame latent (`image=<png>`).

A directory with `expand_timesteps` (Wan2.2 TI2V-5B) conditions on an image the way diffusers'
WanImageToVideoPipeline does for it: the image, resized and normalised by diffusers' VideoProcessor, is encoded
by the checkpoint's VAE (the distribution's mode), normalised with the VAE's latents mean/std, and replaces
latent frame 0 in every pass's input; the tokens of that frame run at timestep 0 (per-token timesteps) and the
finished video's latent frame 0 is the condition itself. Only block 0 holds latent frame 0, so only its passes
change, identically on every stage; the latent is derived from the image file again on a resume.

Legend: C_lat latent channels, h/w latent height/width.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from dualpar.models.registry import ModelInfo

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")


def takes_image(info: ModelInfo) -> bool:
    """Whether the model conditions on a first-frame image (Wan2.2 TI2V-5B: `expand_timesteps`; Wan2.1 I2V)."""
    return bool(info.expand_timesteps) or info.image_channels


def needs_image(info: ModelInfo) -> bool:
    """Whether the model cannot run without `image=` (Wan2.1 I2V)."""
    return info.image_channels


def image_problem(path: str) -> str | None:
    """Why `path` cannot be the conditioning image (None: it opens as an image)."""
    file = Path(path).expanduser()
    if not file.is_file():
        return f"{file} is not a file"
    try:
        from PIL import Image

        with Image.open(file) as img:
            img.verify()
    except Exception as err:  # noqa: BLE001 (any decoder error means the same to the user)
        return f"{file} is not a readable image ({type(err).__name__}: {err})"
    return None


def load_image(path: str) -> Any:
    """The image as an RGB PIL image."""
    from PIL import Image

    with Image.open(Path(path).expanduser()) as img:
        return img.convert("RGB")


@torch.no_grad()
def encode_first_frame(vae: Any, image: Any, height: int, width: int) -> torch.Tensor:
    """[1, C_lat, 1, h, w] float32: `image` (PIL) as WanImageToVideoPipeline.prepare_latents encodes it with
    expand_timesteps (VideoProcessor resize + [-1, 1], the VAE's mode, (z - mean) / std)."""
    from diffusers.video_processor import VideoProcessor

    cfg = vae.config
    device = next(vae.parameters()).device
    processor = VideoProcessor(vae_scale_factor=int(cfg.scale_factor_spatial))
    pixels = processor.preprocess(image, height=height, width=width).to(device=device, dtype=torch.float32)
    latent = vae.encode(pixels.unsqueeze(2).to(vae.dtype)).latent_dist.mode().float()
    mean = torch.tensor(cfg.latents_mean).view(1, cfg.z_dim, 1, 1, 1).to(device)
    inv_std = 1.0 / torch.tensor(cfg.latents_std).view(1, cfg.z_dim, 1, 1, 1).to(device)
    return ((latent - mean) * inv_std).cpu()


def first_frame_latent(info: ModelInfo, image_path: str, height: int, width: int) -> torch.Tensor:
    """The conditioning latent of `image_path` for `info`'s VAE (loaded on the CPU for this and freed)."""
    from diffusers import AutoencoderKLWan

    assert info.path is not None, "image conditioning needs a checkpoint directory"
    vae = AutoencoderKLWan.from_pretrained(info.path / "vae", torch_dtype=torch.float32).eval()
    try:
        return encode_first_frame(vae, load_image(image_path), height, width)
    finally:
        del vae


def first_frame_timesteps(t: torch.Tensor, rows: int, tokens: int, frame_tokens: int) -> torch.Tensor:
    """[rows, tokens] per-token timesteps of a window that starts at latent frame 0: its first `frame_tokens`
    tokens (the condition frame) at 0, the rest at `t` (WanImageToVideoPipeline's mask x t)."""
    mask = torch.ones(tokens, dtype=torch.float32)
    mask[:frame_tokens] = 0
    return (mask * t).unsqueeze(0).expand(rows, -1)


@torch.no_grad()
def encode_channel_condition(vae: Any, image: Any, height: int, width: int, latent_frames: int) -> torch.Tensor:
    """[1, 4 + C_lat, latent_frames, h, w] float32: Wan2.1 I2V's channel condition as WanImageToVideoPipeline
    builds it: the frame mask (4 channels per latent frame: 1 on the image frame) and the VAE latents (mode,
    normalised) of the image followed by black frames, for the whole video."""
    from diffusers.video_processor import VideoProcessor

    cfg = vae.config
    device = next(vae.parameters()).device
    stride = int(cfg.scale_factor_temporal)
    frames = stride * (latent_frames - 1) + 1
    pixels = VideoProcessor(vae_scale_factor=int(cfg.scale_factor_spatial)).preprocess(
        image, height=height, width=width
    )
    pixels = pixels.to(device=device, dtype=torch.float32).unsqueeze(2)
    video = torch.cat([pixels, pixels.new_zeros(1, 3, frames - 1, height, width)], dim=2)
    latent = vae.encode(video.to(vae.dtype)).latent_dist.mode().float()
    mean = torch.tensor(cfg.latents_mean).view(1, cfg.z_dim, 1, 1, 1).to(device)
    inv_std = 1.0 / torch.tensor(cfg.latents_std).view(1, cfg.z_dim, 1, 1, 1).to(device)
    latent = (latent - mean) * inv_std
    h, w = latent.shape[-2:]
    mask = torch.zeros(1, 1, frames, h, w, device=device)
    mask[:, :, 0] = 1
    mask = torch.cat([mask[:, :, :1].repeat_interleave(stride, dim=2), mask[:, :, 1:]], dim=2)
    mask = mask.view(1, -1, stride, h, w).transpose(1, 2)
    return torch.cat([mask, latent], dim=1).cpu()


def channel_condition(info: ModelInfo, image_path: str, height: int, width: int, latent_frames: int) -> torch.Tensor:
    """Wan2.1 I2V's channel condition of `image_path` for `latent_frames` latents (the VAE loaded and freed)."""
    from diffusers import AutoencoderKLWan

    assert info.path is not None, "image conditioning needs a checkpoint directory"
    vae = AutoencoderKLWan.from_pretrained(info.path / "vae", torch_dtype=torch.float32).eval()
    try:
        return encode_channel_condition(vae, load_image(image_path), height, width, latent_frames)
    finally:
        del vae


@torch.no_grad()
def clip_image_embeds(info: ModelInfo, image_path: str, device: torch.device) -> torch.Tensor:
    """[1, T, D] float32: the CLIP image encoder's penultimate hidden states (WanImageToVideoPipeline.encode_image)."""
    from transformers import CLIPImageProcessor, CLIPVisionModel

    assert info.path is not None, "image conditioning needs a checkpoint directory"
    processor = CLIPImageProcessor.from_pretrained(info.path / "image_processor")
    encoder = CLIPVisionModel.from_pretrained(info.path / "image_encoder").to(device).eval()
    inputs = processor(images=load_image(image_path), return_tensors="pt").to(device)
    out = encoder(**inputs, output_hidden_states=True).hidden_states[-2].float()
    del encoder
    return out
