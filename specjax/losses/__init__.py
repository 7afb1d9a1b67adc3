"""Losses in float32: masked next-token cross-entropy with optional z-loss (lm)."""
