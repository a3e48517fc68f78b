"""attribution-audit: which catalogued works is a generated image closest to, how sure are we, and the proof."""

__version__ = "0.1.0"
