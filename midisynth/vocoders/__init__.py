"""Vocoders: log-mel frames to audio (Griffin-Lim, an ONNX file, or the neural Vocos vocoder)."""
