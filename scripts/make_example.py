"""Write the bundled example song `midisynth/assets/examples/example.mid` (about 10 s, four instruments)."""

from pathlib import Path

import pretty_midi

OUT = Path(__file__).resolve().parent.parent / "midisynth" / "assets" / "examples" / "example.mid"
BEAT = 0.5  # seconds (120 bpm)
CHORDS = [(60, 64, 67), (57, 60, 64), (53, 57, 60), (55, 59, 62)]  # C, Am, F, G
MELODY = [72, 71, 69, 67, 69, 71, 72, 74, 76, 74, 72, 71, 72, 67, 69, 71, 72, 72, 71, 72]


def build() -> pretty_midi.PrettyMIDI:
    pm = pretty_midi.PrettyMIDI(initial_tempo=120)
    piano = pretty_midi.Instrument(program=0, name="Piano")
    bass = pretty_midi.Instrument(program=33, name="Bass")
    flute = pretty_midi.Instrument(program=73, name="Flute")
    drums = pretty_midi.Instrument(program=0, is_drum=True, name="Drums")
    for bar, chord in enumerate(CHORDS * 1 + CHORDS[:1]):
        start = bar * 4 * BEAT
        for pitch in chord:
            piano.notes.append(pretty_midi.Note(80, pitch, start, start + 4 * BEAT - 0.05))
        for beat in range(4):
            t = start + beat * BEAT
            bass.notes.append(pretty_midi.Note(95, chord[0] - 24, t, t + BEAT * 0.9))
            drums.notes.append(pretty_midi.Note(100, 36 if beat % 2 == 0 else 38, t, t + 0.1))
            drums.notes.append(pretty_midi.Note(70, 42, t + BEAT / 2, t + BEAT / 2 + 0.05))
    for i, pitch in enumerate(MELODY):
        flute.notes.append(pretty_midi.Note(90, pitch, i * BEAT, (i + 1) * BEAT - 0.02))
    pm.instruments.extend([piano, bass, flute, drums])
    return pm


if __name__ == "__main__":
    build().write(str(OUT))
    print(OUT)
