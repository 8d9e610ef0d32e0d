"""Training: the spectrogram model's trainer and the vocoder's."""
