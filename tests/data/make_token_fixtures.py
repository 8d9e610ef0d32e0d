"""Regenerate the tokenizer fixtures: MIDI files in tests/data/midi/ and reference tokens in tests/data/tokens/.

The reference is diffusers 0.35.2's `MidiProcessor` (note-seq 0.0.5 reads the MIDI and applies the sustain
pedal). Each tokens/NAME.json holds {"duration": note_seq's total_time after sustain (s), "windows": the
reference's token windows without padding, or null and "reference_error" if the reference raises}.
Run from the repository root with the reference stack installed:

    python tests/data/make_token_fixtures.py
"""

from __future__ import annotations

import io
import json
import random
from pathlib import Path

import mido
import pretty_midi

HERE = Path(__file__).resolve().parent
MIDI_DIR = HERE / "midi"
TOKENS_DIR = HERE / "tokens"


def song(*instruments: pretty_midi.Instrument, tempo: float = 120.0) -> bytes:
    pm = pretty_midi.PrettyMIDI(initial_tempo=tempo)
    pm.instruments.extend(instruments)
    out = io.BytesIO()
    pm.write(out)
    return out.getvalue()


def inst(
    program: int, notes: list[tuple[int, float, float, int]], is_drum: bool = False, pedal: list[tuple[int, float]] = ()
) -> pretty_midi.Instrument:
    """notes: (pitch, start s, end s, velocity); pedal: (CC 64 value, time s)."""
    i = pretty_midi.Instrument(program=program, is_drum=is_drum)
    i.notes = [pretty_midi.Note(velocity=v, pitch=p, start=s, end=e) for p, s, e, v in notes]
    i.control_changes = [pretty_midi.ControlChange(number=64, value=v, time=t) for v, t in pedal]
    return i


def track_file(*messages: mido.Message | mido.MetaMessage) -> bytes:
    """A one-track file written with mido, for messages pretty_midi cannot write (velocity-0 note-ons, tempo and
    program changes mid-track); times in ticks of 480 per beat."""
    mid = mido.MidiFile(ticks_per_beat=480)
    mid.tracks.append(mido.MidiTrack(messages))
    out = io.BytesIO()
    mid.save(file=out)
    return out.getvalue()


def tempo_changes() -> bytes:
    messages = [mido.MetaMessage("set_tempo", tempo=500000, time=0), mido.Message("program_change", program=19)]
    for k in range(24):
        if k in (8, 16):
            messages.append(mido.MetaMessage("set_tempo", tempo=300000 if k == 8 else 900000, time=0))
        messages.append(mido.Message("note_on", note=60 + k % 12, velocity=90, time=0))
        messages.append(mido.Message("note_on", note=60 + k % 12, velocity=0, time=360))  # velocity-0 note-off
        messages.append(mido.Message("note_off", note=60, velocity=0, time=120))  # stray note-off
    return track_file(*messages)


def program_changes() -> bytes:
    """One channel changing program between notes, and once while a note sounds."""
    messages = []
    for k, program in enumerate([0, 30, 30, 57, 99, 120]):
        messages.append(mido.Message("program_change", program=program, time=0))
        messages.append(mido.Message("note_on", note=50 + k, velocity=80, time=0))
        messages.append(mido.Message("note_off", note=50 + k, velocity=0, time=960))
    messages.append(mido.Message("note_on", note=70, velocity=80, time=0))
    messages.append(mido.Message("program_change", program=41, time=480))
    messages.append(mido.Message("note_off", note=70, velocity=0, time=480))
    messages.append(mido.Message("note_on", note=72, velocity=80, time=0))
    messages.append(mido.Message("note_off", note=72, velocity=0, time=480))
    return track_file(*messages)


def dense_piece(seed: int, seconds: float) -> bytes:
    """Six pitched parts (several mapped down to a Slakh class) and a drum part."""
    rng = random.Random(seed)
    parts = []
    for program in (0, 33, 40, 73, 81, 25):
        notes, t = [], 0.0
        while t < seconds:
            length = rng.choice([0.1, 0.25, 0.5, 1.0, 2.0])
            notes.append((rng.randint(36, 90), round(t, 3), round(t + length, 3), rng.randint(1, 127)))
            t += rng.choice([0.0, 0.125, 0.25, 0.5])
        parts.append(inst(program, notes))
    drums = [
        (rng.choice([36, 38, 42, 46, 49]), round(k * 0.25, 3), round(k * 0.25 + 0.1, 3), 100)
        for k in range(int(seconds * 4))
    ]
    parts.append(inst(0, drums, is_drum=True))
    return song(*parts)


def cases() -> dict[str, bytes]:
    return {
        # The spec's worked example: program 0, C4 0-1 s and E4 0.5-6 s, velocity 100.
        "worked_example": song(inst(0, [(60, 0.0, 1.0, 100), (64, 0.5, 6.0, 100)])),
        "empty": song(inst(0, [])),
        "sustain_pedal": song(
            inst(
                0,
                [(60, 0.0, 0.5, 90), (64, 0.25, 0.6, 90), (60, 1.0, 1.2, 90), (67, 3.0, 3.1, 70)],
                pedal=[(127, 0.1), (0, 2.0), (100, 2.9), (10, 7.3)],
            ),
            inst(0, [(48, 0.0, 0.5, 90), (48, 1.0, 1.5, 90)]),
        ),  # no pedal on this instrument
        # Two E4 onsets at once under the pedal: note_seq keeps one of them.
        "sustain_restrike_same_time": song(
            inst(0, [(64, 1.0, 1.5, 90), (64, 1.0, 2.0, 80), (64, 2.5, 3.0, 90)], pedal=[(127, 0.5), (0, 4.0)])
        ),
        "sustain_held_to_end": song(
            inst(4, [(60, 0.0, 0.5, 90), (62, 1.0, 1.5, 90)], pedal=[(127, 0.2)]), inst(33, [(40, 0.0, 4.0, 90)])
        ),
        # Pedal never released and a drum part past the last pitched event: the song length shrinks to that
        # event (1.5 s), and the later drum hits land in the last window with shifts over 10 s.
        "sustain_held_drums_after": song(
            inst(0, [(60, 0.0, 0.5, 90), (62, 1.0, 1.5, 90)], pedal=[(127, 0.2)]),
            inst(0, [(36, 2.0, 2.1, 100), (38, 25.0, 25.1, 100)], is_drum=True),
        ),
        # A long drum note keeps the song going after the last event: the last window's tie section still shows
        # the piano note that ended at that event.
        "drum_tail": song(
            inst(0, [(60, 0.0, 6.0, 90), (64, 3.0, 6.0, 90)]), inst(0, [(49, 0.0, 11.0, 100)], is_drum=True)
        ),
        "drums_and_bass": song(
            inst(0, [(36, k * 0.5, k * 0.5 + 0.1, 100) for k in range(16)], is_drum=True),
            inst(34, [(40 + k % 5, k * 0.5, k * 0.5 + 0.45, 80) for k in range(16)]),
        ),
        "drums_only": song(inst(0, [(42, k * 0.125, k * 0.125 + 0.05, 60 + k % 60) for k in range(40)], is_drum=True)),
        "slakh_mapping": song(
            *[
                inst(p, [(60 + i % 12, i * 0.3, i * 0.3 + 0.25, 90)])
                for i, p in enumerate([1, 5, 15, 27, 31, 39, 44, 49, 53, 63, 65, 72, 79, 87, 127])
            ]
        ),
        "program_changes": program_changes(),
        "tempo_changes": tempo_changes(),
        "window_boundaries": song(
            inst(
                0,
                [
                    (60, 0.0, 5.12, 90),
                    (62, 5.12, 10.24, 90),
                    (64, 10.24, 10.5, 90),
                    (65, 5.11, 5.13, 90),
                    (67, 5.115, 10.245, 90),
                ],
            )
        ),
        "long_notes": song(inst(48, [(55, 0.0, 17.0, 70), (59, 1.0, 12.5, 70)]), inst(26, [(47, 4.0, 16.0, 70)])),
        "long_silence": song(inst(0, [(60, 0.0, 0.5, 90), (62, 12.0, 12.5, 90), (64, 25.3, 26.0, 90)])),
        "overlapping_same_pitch": song(
            inst(0, [(60, 0.0, 2.0, 90), (60, 1.0, 3.0, 90), (60, 1.0, 1.5, 60), (62, 2.0, 2.0001, 90)])
        ),
        "zero_length_notes": song(inst(0, [(60, 1.0, 1.0, 90), (64, 1.0, 2.0, 90)])),
        "rounding": song(inst(0, [(60, 0.005, 0.015, 90), (61, 0.125, 0.135, 90), (62, 0.0249, 0.0251, 90)])),
        "velocities": song(
            inst(0, [(60 + k, k * 0.2, k * 0.2 + 0.5, v) for k, v in enumerate([1, 127, 64, 2, 100])]),
            inst(40, [(70, 0.2, 0.4, 1), (71, 0.2, 0.4, 127)]),
            inst(0, [(36, 0.2, 0.3, 5), (38, 0.4, 0.5, 127)], is_drum=True),
        ),
        "dense_30s": dense_piece(seed=1, seconds=30.0),
    }


def main() -> None:
    import note_seq
    from diffusers.pipelines.deprecated.spectrogram_diffusion.midi_utils import MidiProcessor

    MIDI_DIR.mkdir(exist_ok=True)
    TOKENS_DIR.mkdir(exist_ok=True)
    processor = MidiProcessor()
    for name, data in cases().items():
        path = MIDI_DIR / f"{name}.mid"
        path.write_bytes(data)
        duration = note_seq.apply_sustain_control_changes(note_seq.midi_to_note_sequence(data)).total_time
        fixture: dict = {"duration": duration}
        try:
            fixture["windows"] = [[int(t) for t in w if t != 0] for w in processor(str(path))]
        except Exception as err:  # the reference's own failure is part of the record
            fixture.update(windows=None, reference_error=f"{type(err).__name__}: {err}")
        (TOKENS_DIR / f"{name}.json").write_text(json.dumps(fixture) + "\n")
        windows = fixture["windows"]
        print(f"{name}: {duration:.3f} s, " + (f"{len(windows)} windows" if windows else fixture["reference_error"]))


if __name__ == "__main__":
    main()
