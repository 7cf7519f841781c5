"""Runnable examples for fastssim (a package so that ``python -m examples.<name>`` works from the repo root)."""
