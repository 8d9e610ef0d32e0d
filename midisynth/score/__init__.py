"""The score: MIDI files read into songs of notes, the notes as the model's event tokens, songs split by instrument."""
