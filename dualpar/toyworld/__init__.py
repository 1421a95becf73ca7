"""The toy world: dualpar's default CPU-trainable video model and its procedural data.

Submodules: `world` (clips, captions, ground truth), `codec` (lossless space-time-to-depth latent codec),
`text` (word tokenizer and prompt encoder), `model_dir` (the diffusers-layout model directory),
`sampling` (x0-to-flow wrapper and a reference Euler sampler). Nothing heavy is imported here.
"""
