"""cnncheck: gradient checks and benchmarks for convolutional-network layers."""

__version__ = "0.1.0"
