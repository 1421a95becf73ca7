"""Pure scheduling: the block-queue plan, the coordinated noise pool and per-block solver state."""
