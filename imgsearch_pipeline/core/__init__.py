"""Pure logic of the pipeline: no Dagster, no I/O beyond what a function names."""
