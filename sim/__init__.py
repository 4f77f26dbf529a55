"""Closed-loop homepage simulation sandbox for artwork personalization."""
from __future__ import annotations

__version__ = "0.1.0"
