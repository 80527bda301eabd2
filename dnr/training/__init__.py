"""Training: the pure-PyTorch step (``dnr.training.step``), the worker loop and checkpoint state."""
