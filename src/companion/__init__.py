"""Companion to two papers: language-expert steering (paper A) and DPO implicit rewards (paper B)."""

__version__ = "0.1.0"
