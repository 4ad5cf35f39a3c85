"""adaptbench: reproducible paper benchmarks for parameter-efficient adaptation."""

__version__ = "0.1.0"
