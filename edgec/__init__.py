"""edgec: compile a trained model for an edge target, benchmark it, and gate its release."""

from __future__ import annotations

__version__ = "0.1.0"
