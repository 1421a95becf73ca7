"""Tensor transport between pipeline stages (torch.distributed point-to-point)."""
