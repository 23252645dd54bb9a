"""The ``bulk-assign`` command: parses arguments, builds settings, runs the engine, maps the exit code."""

from .main import main

__all__ = ["main"]
