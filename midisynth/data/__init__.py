"""Training data: MIDI sources, FluidSynth reference renders, and a memory-mapped window store."""
