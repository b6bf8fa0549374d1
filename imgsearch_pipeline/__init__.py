"""imgsearch: image similarity search as a Dagster asset pipeline."""

from .definitions import defs

__all__ = ["defs"]
