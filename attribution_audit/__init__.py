"""attribution-audit: which catalogued works is a generated image closest to, how sure are we, and the proof.

The Python API (see :mod:`attribution_audit.api`) is importable from here: ``from attribution_audit import
open_service, AttributionParams, Upload``. Its names load on first use, so that ``import attribution_audit`` (and
every submodule import) stays light.
"""

from typing import Any

__version__ = "0.1.0"

_API = (
    "Attribution",
    "AttributionParams",
    "AttributionService",
    "Neighbour",
    "RequestFilter",
    "Settings",
    "Upload",
    "Verification",
    "attribute_files",
    "browse_attributions",
    "create_key",
    "get_attribution",
    "list_attributions",
    "load_settings",
    "open_audit",
    "open_service",
    "shares_over_time",
    "verify_chain",
)
__all__ = ["__version__", *_API]


def __getattr__(name: str) -> Any:
    if name in _API:
        import importlib

        return getattr(importlib.import_module("attribution_audit.api"), name)
    raise AttributeError(f"module 'attribution_audit' has no attribute {name!r}")
