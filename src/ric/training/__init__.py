"""Conditional SFT (offline and online stages share it) and batched generation."""
