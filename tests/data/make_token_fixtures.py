"""Regenerate the tokenizer fixtures: MIDI files in tests/data/midi/ and the reference tokens in tests/data/tokens/.

The reference is diffusers 0.35.2's `MidiProcessor` (note-seq 0.0.5 reads the MIDI). Run from the repository root:

    python tests/data/make_token_fixtures.py
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import pretty_midi

HERE = Path(__file__).resolve().parent
MIDI_DIR = HERE / "midi"
TOKENS_DIR = HERE / "tokens"


def song(*instruments: pretty_midi.Instrument, tempo: float = 120.0) -> pretty_midi.PrettyMIDI:
    pm = pretty_midi.PrettyMIDI(initial_tempo=tempo)
    pm.instruments.extend(instruments)
    return pm


def inst(program: int, notes: list[tuple[int, float, float, int]], is_drum: bool = False,
         controls: list[tuple[int, int, float]] = ()) -> pretty_midi.Instrument:
    """notes: (pitch, start s, end s, velocity); controls: (number, value, time s)."""
    i = pretty_midi.Instrument(program=program, is_drum=is_drum)
    i.notes = [pretty_midi.Note(velocity=v, pitch=p, start=s, end=e) for p, s, e, v in notes]
    i.control_changes = [pretty_midi.ControlChange(number=n, value=v, time=t) for n, v, t in controls]
    return i


def dense_piece(seed: int, seconds: float) -> pretty_midi.PrettyMIDI:
    rng = random.Random(seed)
    parts = []
    for program in (0, 33, 40, 73, 81, 25):
        notes, t = [], 0.0
        while t < seconds:
            length = rng.choice([0.1, 0.25, 0.5, 1.0, 2.0])
            notes.append((rng.randint(36, 90), round(t, 3), round(t + length, 3), rng.randint(1, 127)))
            t += rng.choice([0.0, 0.125, 0.25, 0.5])
        parts.append(inst(program, notes))
    drums = [(rng.choice([36, 38, 42, 46, 49]), round(k * 0.25, 3), round(k * 0.25 + 0.1, 3), 100)
             for k in range(int(seconds * 4))]
    parts.append(inst(0, drums, is_drum=True))
    return song(*parts)


def tempo_changes() -> pretty_midi.PrettyMIDI:
    """Written with mido so the file really carries several tempo events."""
    import mido

    mid = mido.MidiFile(ticks_per_beat=480)
    track = mido.MidiTrack()
    mid.tracks.append(track)
    track.append(mido.MetaMessage("set_tempo", tempo=500000, time=0))
    track.append(mido.Message("program_change", program=19, time=0))
    for k in range(24):
        if k == 8:
            track.append(mido.MetaMessage("set_tempo", tempo=300000, time=0))
        if k == 16:
            track.append(mido.MetaMessage("set_tempo", tempo=900000, time=0))
        track.append(mido.Message("note_on", note=60 + k % 12, velocity=90, time=0))
        track.append(mido.Message("note_on", note=60 + k % 12, velocity=0, time=360))  # velocity-0 note-off
        track.append(mido.Message("note_off", note=60, velocity=0, time=120))
    path = MIDI_DIR / "tempo_changes.mid"
    mid.save(path)
    return pretty_midi.PrettyMIDI(str(path))


def program_changes() -> pretty_midi.PrettyMIDI:
    import mido

    mid = mido.MidiFile(ticks_per_beat=480)
    track = mido.MidiTrack()
    mid.tracks.append(track)
    for k, program in enumerate([0, 30, 30, 57, 99, 120]):
        track.append(mido.Message("program_change", program=program, time=0))
        track.append(mido.Message("note_on", note=50 + k, velocity=80, time=0))
        track.append(mido.Message("note_off", note=50 + k, velocity=0, time=960))
    path = MIDI_DIR / "program_changes.mid"
    mid.save(path)
    return pretty_midi.PrettyMIDI(str(path))


def cases() -> dict[str, pretty_midi.PrettyMIDI]:
    return {
        "worked_example": song(inst(0, [(60, 0.0, 1.0, 100), (64, 0.5, 6.0, 100)])),
        "sustain_pedal": song(inst(0, [(60, 0.0, 0.5, 90), (64, 0.25, 0.6, 90), (60, 1.0, 1.2, 90), (67, 3.0, 3.1, 70)],
                                   controls=[(64, 127, 0.1), (64, 0, 2.0), (64, 100, 2.9), (64, 10, 7.3)])),
        "sustain_held_to_end": song(inst(4, [(60, 0.0, 0.5, 90), (62, 1.0, 1.5, 90)], controls=[(64, 127, 0.2)]),
                                    inst(33, [(40, 0.0, 4.0, 90)])),
        "drums_and_bass": song(inst(0, [(36, k * 0.5, k * 0.5 + 0.1, 100) for k in range(16)], is_drum=True),
                               inst(34, [(40 + k % 5, k * 0.5, k * 0.5 + 0.45, 80) for k in range(16)])),
        "slakh_mapping": song(*[inst(p, [(60 + i % 12, i * 0.3, i * 0.3 + 0.25, 90)])
                                for i, p in enumerate([1, 5, 15, 27, 31, 39, 44, 49, 53, 63, 65, 72, 79, 87, 127])]),
        "window_boundaries": song(inst(0, [(60, 0.0, 5.12, 90), (62, 5.12, 10.24, 90), (64, 10.24, 10.5, 90),
                                           (65, 5.11, 5.13, 90)])),
        "long_notes": song(inst(48, [(55, 0.0, 17.0, 70), (59, 1.0, 12.5, 70)])),
        "long_silence": song(inst(0, [(60, 0.0, 0.5, 90), (62, 12.0, 12.5, 90), (64, 25.3, 26.0, 90)])),
        "overlapping_same_pitch": song(inst(0, [(60, 0.0, 2.0, 90), (60, 1.0, 3.0, 90), (60, 1.0, 1.5, 60),
                                                (62, 2.0, 2.0001, 90)])),
        "zero_length_notes": song(inst(0, [(60, 1.0, 1.0, 90), (64, 1.0, 2.0, 90)])),
        "rounding": song(inst(0, [(60, 0.005, 0.015, 90), (61, 0.125, 0.135, 90), (62, 0.0249, 0.0251, 90)])),
        "drums_only": song(inst(0, [(42, k * 0.125, k * 0.125 + 0.05, 60 + k % 60) for k in range(40)], is_drum=True)),
        "dense_30s": dense_piece(seed=1, seconds=30.0),
        "tempo_changes": tempo_changes(),
        "program_changes": program_changes(),
    }


def main() -> None:
    from diffusers.pipelines.deprecated.spectrogram_diffusion.midi_utils import MidiProcessor

    MIDI_DIR.mkdir(exist_ok=True)
    TOKENS_DIR.mkdir(exist_ok=True)
    processor = MidiProcessor()
    for name, pm in cases().items():
        path = MIDI_DIR / f"{name}.mid"
        if not path.exists() or name not in ("tempo_changes", "program_changes"):
            pm.write(str(path))
        windows = [[int(t) for t in w if t != 0] for w in processor(str(path))]
        (TOKENS_DIR / f"{name}.json").write_text(json.dumps(windows))
        print(f"{name}: {len(windows)} windows")


if __name__ == "__main__":
    main()
