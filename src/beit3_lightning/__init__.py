"""beit3-lightning: BEiT-3 (Multiway Transformer) on PyTorch Lightning."""

__version__ = "0.1.0"
