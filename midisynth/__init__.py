"""midisynth: neural MIDI-to-audio rendering with Spectrogram Diffusion."""

__version__ = "0.1.0"
