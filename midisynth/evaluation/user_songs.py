"""The "user songs": a held-out set of the kinds of MIDI users bring and the training generator does not make.

The training pieces (`midisynth.data.sources`) are music21 scores with instruments re-assigned and generated
ensembles at moderate tempi, so a held-out set drawn from the same sources flatters a model. These songs are written
here, note by note, each to stress one thing a listener hears:

| song | what it stresses |
|---|---|
| `rag` | fast virtuoso piano: a stride left hand under a syncopated sixteenth-note right hand, 100 bpm |
| `chorale` | a four-voice chorale on piano, with a fermata rest |
| `pop_band` | a GM pop/rock arrangement (drums, finger bass, clean guitar, strings pad, lead synth) that opens with 3 s of silence and stops for 1.5 s mid-song |
| `drum_kits` | drums alone with program changes on channel 10 (standard, room, power, brush kits) and hand percussion |
| `pedal_ballad` | piano arpeggios held by the sustain pedal (CC64) |
| `tutti` | dense orchestral tutti (strings, brass, winds, timpani) fortissimo, then a soft passage |
| `registers` | extreme registers: piano at A0-C2 and C7-C8, piccolo, tuba, contrabass |
| `runs` | thirty-second-note piano scales and arpeggios, and harp sweeps |
| `dense_random` | dense random notes from several instruments (hard for any transcriber) |
| `rests_and_hits` | staccato brass and string stabs separated by silences of 0.5-2 s |

Every song is deterministic (fixed seeds), 15-30 s long; `write_user_songs` writes them as MIDI files.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from pathlib import Path

import pretty_midi

from midisynth.files import write_atomic

KICK, SNARE, CLOSED_HAT, OPEN_HAT, CRASH, RIDE, LOW_TOM, HIGH_TOM = 36, 38, 42, 46, 49, 51, 45, 50
CONGA_HIGH, CONGA_LOW, SHAKER, CLAP, TAMBOURINE = 62, 64, 70, 39, 54


def _add(inst: pretty_midi.Instrument, pitch: int, start: float, end: float, velocity: int) -> None:
    """A note clamped to MIDI's ranges (pitch 0-127, velocity 1-127), at least 10 ms long."""
    inst.notes.append(
        pretty_midi.Note(
            int(min(127, max(1, velocity))), int(min(127, max(0, pitch))), float(start), float(max(end, start + 0.01))
        )
    )


def _chord_tones(root: int, quality: str) -> list[int]:
    return [root + i for i in {"maj": (0, 4, 7), "min": (0, 3, 7), "dom7": (0, 4, 7, 10), "dim": (0, 3, 6)}[quality]]


def rag() -> pretty_midi.PrettyMIDI:
    """Stride left hand (bass note on beats 1 and 3, chord on 2 and 4) under syncopated sixteenths, 100 bpm."""
    rng = random.Random(11)
    beat = 0.6
    pm = pretty_midi.PrettyMIDI(initial_tempo=100)
    piano = pretty_midi.Instrument(program=0, name="Piano")
    harmony = [
        (43, "maj"),
        (43, "maj"),
        (48, "maj"),
        (48, "maj"),
        (43, "maj"),
        (38, "dom7"),
        (43, "maj"),
        (43, "maj"),
        (40, "min"),
        (45, "dom7"),
        (38, "dom7"),
        (43, "maj"),
    ]
    for bar, (root, quality) in enumerate(harmony):
        t0 = bar * 4 * beat
        tones = _chord_tones(root + 12, quality)
        for b in range(4):
            t = t0 + b * beat
            if b % 2 == 0:
                _add(piano, root - (12 if b == 2 else 0), t, t + 0.45 * beat, 88)
                _add(piano, root - 12 if b == 0 else root, t, t + 0.45 * beat, 70)
            else:
                for p in tones[:3]:
                    _add(piano, p + 12, t, t + 0.4 * beat, 72)
        # right hand: sixteenths drawn from the chord an octave or two up, tied across beats (syncopation)
        melody = [p + 24 for p in _chord_tones(root, quality)] + [p + 36 for p in _chord_tones(root, quality)]
        sixteenth = beat / 4
        step = 0
        while step < 16:
            length = rng.choice([1, 1, 1, 2, 3]) if step % 4 != 3 else 1
            pitch = rng.choice(melody) + rng.choice([0, 0, 0, 2, -1])
            start = t0 + step * sixteenth
            _add(piano, pitch, start, start + length * sixteenth * 0.9, rng.randint(78, 104))
            if rng.random() < 0.3:
                _add(piano, pitch - 12, start, start + length * sixteenth * 0.9, rng.randint(60, 80))
            step += length
    pm.instruments.append(piano)
    return pm


def chorale() -> pretty_midi.PrettyMIDI:
    """Four voices in quarter notes at 72 bpm, a fermata held and a rest of one beat between the two phrases."""
    beat = 60 / 72
    pm = pretty_midi.PrettyMIDI(initial_tempo=72)
    piano = pretty_midi.Instrument(program=0, name="Piano")
    # (soprano, alto, tenor, bass) per beat
    phrase_1 = [
        (67, 64, 60, 48),
        (69, 65, 60, 53),
        (71, 67, 62, 55),
        (72, 67, 64, 48),
        (74, 65, 62, 50),
        (72, 64, 67, 52),
        (71, 62, 67, 55),
        (72, 64, 67, 48),
    ]
    phrase_2 = [
        (72, 64, 57, 45),
        (71, 62, 59, 43),
        (69, 60, 57, 41),
        (67, 59, 62, 43),
        (69, 60, 64, 45),
        (67, 59, 62, 43),
        (65, 57, 60, 50),
        (64, 55, 60, 48),
    ]
    t = 0.0
    for phrase in (phrase_1, phrase_2):
        for i, voices in enumerate(phrase):
            length = beat * (2.0 if i == len(phrase) - 1 else 1.0)  # fermata on each phrase's last chord
            for k, pitch in enumerate(voices):
                _add(piano, pitch, t, t + length * 0.95, 70 - 4 * k + (6 if i % 4 == 0 else 0))
            t += length
        t += beat  # the rest
    pm.instruments.append(piano)
    return pm


def pop_band() -> pretty_midi.PrettyMIDI:
    """Drums, bass, guitar, strings and lead at 112 bpm; 3 s of silence first and a 1.5 s full stop mid-song."""
    rng = random.Random(3)
    beat = 60 / 112
    pm = pretty_midi.PrettyMIDI(initial_tempo=112)
    drums = pretty_midi.Instrument(program=0, is_drum=True, name="Drums")
    bass = pretty_midi.Instrument(program=33, name="Bass")
    guitar = pretty_midi.Instrument(program=27, name="Guitar")
    strings = pretty_midi.Instrument(program=48, name="Strings")
    lead = pretty_midi.Instrument(program=81, name="Lead")
    progression = [(45, "min"), (41, "maj"), (36, "maj"), (43, "maj")] * 2
    bar_length = 4 * beat
    sections = [(3.0, progression[:4]), (3.0 + 4 * bar_length + 1.5, progression)]  # (start s, bars)
    for start, bars in sections:
        for b, (root, quality) in enumerate(bars):
            t0 = start + b * bar_length
            tones = _chord_tones(root, quality)
            for eighth in range(8):
                t = t0 + eighth * beat / 2
                _add(drums, CLOSED_HAT, t, t + 0.05, 70 + rng.randint(-8, 8))
                if eighth in (0, 3, 4):
                    _add(drums, KICK, t, t + 0.1, 105)
                if eighth in (2, 6):
                    _add(drums, SNARE, t, t + 0.1, 100)
                _add(bass, root - 12 + (7 if eighth == 6 else 0), t, t + beat / 2 * 0.8, 95)
            if b == 0:
                _add(drums, CRASH, t0, t0 + 1.0, 100)
            for strum in (0, 1.5, 2, 3):
                t = t0 + strum * beat
                for k, pitch in enumerate(sorted(p + 12 for p in tones) + [tones[0] + 24]):
                    _add(guitar, pitch, t + 0.012 * k, t + 0.45 * beat, 80)
            for pitch in tones:
                _add(strings, pitch + 12, t0, t0 + bar_length * 0.98, 60)
            if start > 3.0:  # the lead plays in the second section
                for q in range(8):
                    if rng.random() < 0.8:
                        t = t0 + q * beat / 2
                        _add(lead, rng.choice(tones) + 24 + rng.choice([0, 12]), t, t + beat / 2 * 0.9, 90)
    pm.instruments.extend([drums, bass, guitar, strings, lead])
    return pm


def drum_kits() -> pretty_midi.PrettyMIDI:
    """A groove on four GM drum kits in turn (program changes on channel 10: 0, 8, 16, 40), with hand percussion."""
    rng = random.Random(5)
    beat = 60 / 96
    pm = pretty_midi.PrettyMIDI(initial_tempo=96)
    for kit_index, kit in enumerate((0, 8, 16, 40)):
        drums = pretty_midi.Instrument(program=kit, is_drum=True, name=f"Kit {kit}")
        for bar in range(2):
            t0 = (kit_index * 2 + bar) * 4 * beat
            for sixteenth in range(16):
                t = t0 + sixteenth * beat / 4
                if sixteenth % 2 == 0:
                    _add(drums, CLOSED_HAT if sixteenth != 14 else OPEN_HAT, t, t + 0.05, 60 + rng.randint(0, 25))
                if sixteenth in (0, 6, 10):
                    _add(drums, KICK, t, t + 0.1, 110)
                if sixteenth in (4, 12):
                    _add(drums, SNARE, t, t + 0.1, 105)
                if sixteenth % 3 == 1:
                    _add(
                        drums, rng.choice([CONGA_HIGH, CONGA_LOW, SHAKER, TAMBOURINE]), t, t + 0.05, rng.randint(50, 90)
                    )
            if bar == 1:
                for k, tom in enumerate((HIGH_TOM, 48, LOW_TOM, 43)):
                    t = t0 + 3 * beat + k * beat / 4
                    _add(drums, tom, t, t + 0.1, 100)
            else:
                _add(drums, CRASH if kit_index % 2 == 0 else RIDE, t0, t0 + 0.5, 95)
        pm.instruments.append(drums)
    return pm


def pedal_ballad() -> pretty_midi.PrettyMIDI:
    """Broken-chord piano at 66 bpm, short notes held by the sustain pedal, pressed and released every bar."""
    beat = 60 / 66
    pm = pretty_midi.PrettyMIDI(initial_tempo=66)
    piano = pretty_midi.Instrument(program=0, name="Piano")
    progression = [
        (48, "maj"),
        (45, "min"),
        (41, "maj"),
        (43, "dom7"),
        (48, "maj"),
        (40, "min"),
        (41, "maj"),
        (43, "maj"),
    ]
    for bar, (root, quality) in enumerate(progression):
        t0 = bar * 4 * beat
        tones = _chord_tones(root, quality)
        figure = [
            root - 12,
            tones[1] + 12,
            tones[2] + 12,
            root + 24,
            tones[1] + 24,
            tones[2] + 12,
            root + 12,
            tones[1] + 12,
        ]
        for k, pitch in enumerate(figure):
            t = t0 + k * beat / 2
            _add(piano, pitch, t, t + 0.15, 64 + (12 if k == 0 else 0))
        _add(piano, tones[2] + 36, t0 + 2 * beat, t0 + 2.3 * beat, 84)  # a melody note
        piano.control_changes.append(pretty_midi.ControlChange(64, 100, t0 + 0.02))
        piano.control_changes.append(pretty_midi.ControlChange(64, 0, t0 + 4 * beat - 0.03))
    pm.instruments.append(piano)
    return pm


def tutti() -> pretty_midi.PrettyMIDI:
    """Strings, brass, winds and timpani: eight bars fortissimo in block chords, then four soft bars of strings."""
    beat = 60 / 84
    pm = pretty_midi.PrettyMIDI(initial_tempo=84)
    parts = {
        name: pretty_midi.Instrument(program=program, name=name)
        for name, program in (
            ("violins", 40),
            ("violas", 41),
            ("cellos", 42),
            ("basses", 43),
            ("trumpets", 56),
            ("horns", 60),
            ("trombones", 57),
            ("flutes", 73),
            ("oboes", 68),
            ("clarinets", 71),
        )
    }
    timpani = pretty_midi.Instrument(program=47, name="timpani")
    progression = [
        (50, "min"),
        (45, "dom7"),
        (50, "min"),
        (43, "min"),
        (46, "maj"),
        (45, "dom7"),
        (50, "min"),
        (45, "maj"),
    ]
    for bar, (root, quality) in enumerate(progression):
        t0 = bar * 4 * beat
        tones = _chord_tones(root, quality)
        for half in range(2):
            t = t0 + half * 2 * beat
            end = t + 2 * beat * 0.95
            _add(parts["basses"], root - 12, t, end, 112)
            _add(parts["cellos"], root, t, end, 110)
            _add(parts["violas"], tones[1] + 12, t, end, 108)
            _add(parts["violins"], tones[2] + 24, t, end, 112)
            _add(parts["violins"], tones[0] + 36, t, end, 112)
            _add(parts["trombones"], tones[0], t, end, 115)
            _add(parts["trombones"], tones[1], t, end, 115)
            _add(parts["horns"], tones[2] + 12, t, end, 110)
            _add(parts["trumpets"], tones[0] + 24, t, end, 118)
            _add(parts["flutes"], tones[1] + 36, t, end, 105)
            _add(parts["oboes"], tones[2] + 24, t, end, 105)
            _add(parts["clarinets"], tones[1] + 24, t, end, 105)
        for k in range(4):
            _add(timpani, root - 12 if k % 2 == 0 else root - 5, t0 + k * beat, t0 + k * beat + 0.3, 110 - 10 * k)
    soft_start = len(progression) * 4 * beat
    for bar, (root, quality) in enumerate(progression[:4]):
        t0 = soft_start + bar * 4 * beat
        tones = _chord_tones(root, quality)
        for name, pitch in (("cellos", root), ("violas", tones[1] + 12), ("violins", tones[2] + 12)):
            _add(parts[name], pitch, t0, t0 + 4 * beat * 0.97, 45)
    pm.instruments.extend([*parts.values(), timpani])
    return pm


def registers() -> pretty_midi.PrettyMIDI:
    """Piano low (A0-C2) and high (C7-C8) in alternation, then piccolo high over tuba and contrabass low."""
    rng = random.Random(7)
    pm = pretty_midi.PrettyMIDI(initial_tempo=90)
    piano = pretty_midi.Instrument(program=0, name="Piano")
    t = 0.0
    for _ in range(16):
        low, high = rng.randint(21, 36), rng.randint(96, 108)
        _add(piano, low, t, t + 0.5, 95)
        _add(piano, high, t + 0.25, t + 0.5, 90)
        t += 0.5
    piccolo = pretty_midi.Instrument(program=72, name="Piccolo")
    tuba = pretty_midi.Instrument(program=58, name="Tuba")
    contrabass = pretty_midi.Instrument(program=43, name="Contrabass")
    for k in range(12):
        start = t + 0.6 * k
        _add(piccolo, rng.randint(96, 108), start, start + 0.55, 90)
        if k % 2 == 0:
            _add(tuba, rng.randint(28, 38), start, start + 1.15, 100)
            _add(contrabass, rng.randint(28, 36), start, start + 1.15, 100)
    pm.instruments.extend([piano, piccolo, tuba, contrabass])
    return pm


def runs() -> pretty_midi.PrettyMIDI:
    """Thirty-second-note piano scales and arpeggios at 80 bpm (about 94 ms per note), and harp sweeps."""
    pm = pretty_midi.PrettyMIDI(initial_tempo=80)
    piano = pretty_midi.Instrument(program=0, name="Piano")
    harp = pretty_midi.Instrument(program=46, name="Harp")
    note_length = 60 / 80 / 8
    scale = (0, 2, 4, 5, 7, 9, 11)
    t = 0.0
    for run in range(8):
        root = 48 + 2 * run
        if run % 2 == 0:  # a scale up two octaves and back
            steps = list(range(15)) + list(range(13, -1, -1))
            pitches = [root + 12 * (s // 7) + scale[s % 7] for s in steps]
        else:  # an arpeggio up and down
            arpeggio = [0, 4, 7, 12, 16, 19, 24, 28, 31, 28, 24, 19, 16, 12, 7, 4]
            pitches = [root + a for a in arpeggio]
        for k, pitch in enumerate(pitches):
            _add(piano, pitch, t, t + note_length * 0.95, 80 + (15 if k % 4 == 0 else 0))
            t += note_length
        _add(piano, root - 12, t, t + 0.6, 90)
        t += 0.6
        if run % 2 == 1:  # a harp sweep
            for k in range(14):
                pitch = 55 + 12 * (k // 7) + scale[k % 7]
                _add(harp, pitch, t + 0.04 * k, t + 1.5, 85)
            t += 1.0
    pm.instruments.extend([piano, harp])
    return pm


def dense_random() -> pretty_midi.PrettyMIDI:
    """About 12 notes per second from piano, marimba, pizzicato strings and clarinet, at random pitches and times."""
    rng = random.Random(13)
    pm = pretty_midi.PrettyMIDI(initial_tempo=120)
    instruments = [pretty_midi.Instrument(program=p) for p in (0, 12, 45, 71)]
    for inst in instruments:
        low, high = {0: (36, 96), 12: (53, 89), 45: (40, 84), 71: (50, 86)}[inst.program]
        t = rng.uniform(0, 0.3)
        while t < 18.0:
            length = rng.choice([0.08, 0.12, 0.2, 0.3, 0.5])
            _add(inst, rng.randint(low, high), t, t + length, rng.randint(50, 120))
            t += rng.expovariate(3.0)
    pm.instruments.extend(instruments)
    return pm


def rests_and_hits() -> pretty_midi.PrettyMIDI:
    """Staccato brass and string chords (0.1-0.4 s) separated by silences of 0.5-2 s, at varied velocities."""
    rng = random.Random(17)
    pm = pretty_midi.PrettyMIDI(initial_tempo=100)
    brass = pretty_midi.Instrument(program=61, name="Brass")
    strings = pretty_midi.Instrument(program=48, name="Strings")
    t = 0.8
    while t < 20.0:
        root = rng.randint(45, 57)
        length = rng.choice([0.1, 0.2, 0.4])
        velocity = rng.randint(60, 125)
        for pitch in _chord_tones(root, rng.choice(["maj", "min"])):
            _add(brass, pitch + 12, t, t + length, velocity)
            _add(strings, pitch, t, t + length, velocity - 10)
        t += length + rng.choice([0.5, 0.8, 1.2, 2.0])
    pm.instruments.extend([brass, strings])
    return pm


USER_SONGS: dict[str, Callable[[], pretty_midi.PrettyMIDI]] = {
    "rag": rag,
    "chorale": chorale,
    "pop_band": pop_band,
    "drum_kits": drum_kits,
    "pedal_ballad": pedal_ballad,
    "tutti": tutti,
    "registers": registers,
    "runs": runs,
    "dense_random": dense_random,
    "rests_and_hits": rests_and_hits,
}


def write_user_songs(out_dir: str | Path) -> list[Path]:
    """Write every user song to `out_dir/<name>.mid` (atomically); returns the paths, in USER_SONGS' order."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, build in USER_SONGS.items():
        path = out / f"{name}.mid"
        song = build()
        write_atomic(path, lambda f, song=song: song.write(f))
        paths.append(path)
    return paths


if __name__ == "__main__":  # python -m midisynth.evaluation.user_songs OUT_DIR
    import sys

    for written in write_user_songs(sys.argv[1] if len(sys.argv) > 1 else "data/user_songs"):
        print(written)
