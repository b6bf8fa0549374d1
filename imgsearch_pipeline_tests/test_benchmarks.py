"""`make bench` runs from a fresh install: every benchmark module imports, and the machine
record (which needs threadpoolctl) is complete. The figures themselves are not tested."""

import importlib
import pkgutil

import benchmarks
from benchmarks.common import machine


def test_every_benchmark_module_imports():
    names = [m.name for m in pkgutil.iter_modules(benchmarks.__path__)]
    assert {"run", "common", "embedding", "depth"} <= set(names)
    for name in names:
        importlib.import_module(f"benchmarks.{name}")


def test_machine_record_names_the_blas_kernels():
    info = machine()
    assert info["cores"] >= 1
    assert any(pool["user_api"] == "blas" for pool in info["threadpools"]), info["threadpools"]
