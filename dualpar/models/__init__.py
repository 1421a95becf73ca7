"""Model adapters: the diffusers Wan backbone driven from outside, codecs, prompt encoders and presets."""
