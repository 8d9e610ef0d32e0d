"""Rendering: the pipeline that turns songs into log-mel frames, window by window, and then into audio."""
