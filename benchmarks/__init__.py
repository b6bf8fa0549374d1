"""Benchmarks of the pipeline at the prototype's scale: `make bench` or `python -m benchmarks.run`."""
