"""attribution-audit: which catalogued works is a generated image closest to, how sure are we, and the proof.

The Python API (see :mod:`attribution_audit.api`, its ``__all__``) is importable from here: ``from
attribution_audit import open_service, AttributionParams, Upload``. Its names load on first use, so that ``import
attribution_audit`` (and every submodule import, which runs this file first) stays light.
"""

from typing import Any

__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    if not name.startswith("__"):
        import importlib

        api = importlib.import_module("attribution_audit.api")
        if name in api.__all__:
            return getattr(api, name)
    raise AttributeError(f"module 'attribution_audit' has no attribute {name!r}")
