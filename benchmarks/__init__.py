"""The kmsbox benchmark suite: ``python -m benchmarks`` (see README)."""
