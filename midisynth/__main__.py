"""`python -m midisynth`: the command line as launchers start it (`torchrun ... -m midisynth train`)."""

from midisynth.cli import run

run()
