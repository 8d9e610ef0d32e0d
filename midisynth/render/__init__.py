"""Rendering: diffusion samplers and the pipeline that turns a song into log-mel frames, window by window."""
