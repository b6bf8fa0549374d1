"""Backends as Dagster resources, each behind one small interface."""
