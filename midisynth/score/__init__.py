"""The score: MIDI files read into songs of notes, the notes as the model's event tokens and on its frame grid, songs
split by instrument."""
