"""Evaluation: distances between renders and reference audio on held-out songs."""
