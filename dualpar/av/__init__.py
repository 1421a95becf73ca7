"""Audio-video building blocks of the `av` job (design/AUDIO_VIDEO.md).

timegrid / window: the exact clock and per-window layout shared by both modalities.
codec / oobleck / stream: audio codecs, streaming decode, the soundtrack on the output sample clock.
branch / fusion / cache / rope: the audio tower, the Wan block split with zero-initialised fusion, the audio
feature cache and physical-time RoPE. noise / guidance / config: per-block audio noise, per-modality guidance,
typed options. sync / synthetic / avio: sync metrics without pretrained models and their fixtures.
Submodules are imported where used: `import dualpar.av` loads nothing heavy.
"""
