"""MIDI material available offline for training: generated pieces, music21's corpus, and user folders.

Every source yields `(piece_id, pretty_midi.PrettyMIDI)` deterministically for a seed. Instruments are drawn across
all General MIDI programs so that every Slakh class (and drums) is covered.
"""

from __future__ import annotations

import io
import random
import tempfile
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

import pretty_midi

from midisynth.score.midi_files import find_midi_files
from midisynth.score.tokens import SLAKH_PROGRAMS

MAJOR = (0, 2, 4, 5, 7, 9, 11)
MINOR = (0, 2, 3, 5, 7, 8, 10)
PROGRESSIONS = ((0, 5, 3, 4), (0, 3, 4, 0), (0, 4, 5, 3), (5, 3, 0, 4), (0, 1, 4, 0))  # scale degrees
KICK, SNARE, CLOSED_HAT, OPEN_HAT, CRASH, TOM = 36, 38, 42, 46, 49, 45
BASS_DRUM, SIDE_STICK, CLAP, ELECTRIC_SNARE, RIDE, TAMBOURINE, CRASH_2, MARACAS = 35, 37, 39, 40, 51, 54, 57, 70


def random_program(rng: random.Random) -> int:
    """A GM program from a uniformly chosen Slakh class (any program within the class's range)."""
    index = rng.randrange(len(SLAKH_PROGRAMS))
    low = SLAKH_PROGRAMS[index]
    high = SLAKH_PROGRAMS[index + 1] - 1 if index + 1 < len(SLAKH_PROGRAMS) else 127
    return rng.randint(low, high)


def _note(inst: pretty_midi.Instrument, pitch: int, start: float, end: float, velocity: int) -> None:
    inst.notes.append(pretty_midi.Note(int(max(1, min(127, velocity))), int(max(0, min(127, pitch))), start, end))


def generated_piece(rng: random.Random, seconds: float) -> pretty_midi.PrettyMIDI:
    """A multi-instrument piece: chords, melody, bass and drums over a progression, with varied articulation."""
    bpm = rng.uniform(70, 170)
    beat = 60.0 / bpm
    pm = pretty_midi.PrettyMIDI(initial_tempo=bpm)
    scale = rng.choice([MAJOR, MINOR])
    root = rng.randint(48, 59)
    progression = rng.choice(PROGRESSIONS)
    bars = max(1, int(seconds / (4 * beat)))
    dynamics = rng.randint(50, 110)

    def degree_pitch(degree: int, octave: int = 0) -> int:
        return root + 12 * (octave + degree // 7) + scale[degree % 7]

    roles = rng.sample(["chords", "melody", "bass", "drums"], rng.randint(2, 4))  # 2-4 instruments at once
    for role in roles:
        if role == "drums":
            inst = pretty_midi.Instrument(program=0, is_drum=True)
            for b in range(bars):
                for eighth in range(8):
                    t = (b * 4 + eighth / 2) * beat
                    _note(
                        inst,
                        CLOSED_HAT if rng.random() < 0.85 else OPEN_HAT,
                        t,
                        t + 0.1,
                        dynamics - 20 + rng.randint(-10, 10),
                    )
                    if eighth in (0, 4) or (eighth == 5 and rng.random() < 0.3):
                        _note(inst, KICK, t, t + 0.1, dynamics + rng.randint(-5, 15))
                    if eighth in (2, 6):
                        _note(inst, SNARE, t, t + 0.1, dynamics + rng.randint(-10, 10))
                if b % 4 == 0 and rng.random() < 0.5:
                    _note(inst, rng.choice([CRASH, TOM]), b * 4 * beat, b * 4 * beat + 0.3, dynamics)
            pm.instruments.append(inst)
            continue
        inst = pretty_midi.Instrument(program=random_program(rng))
        style = rng.choice(["sustained", "staccato", "arpeggio", "mixed"])
        for b in range(bars):
            chord_degree = progression[b % len(progression)]
            bar_start = b * 4 * beat
            if role == "chords":
                pitches = [degree_pitch(chord_degree + k) for k in (0, 2, 4)]
                if style in ("sustained", "mixed"):
                    for p in pitches:
                        _note(
                            inst,
                            p,
                            bar_start,
                            bar_start + 4 * beat * rng.uniform(0.9, 1.0),
                            dynamics + rng.randint(-15, 5),
                        )
                elif style == "staccato":
                    for k in range(4):
                        for p in pitches:
                            _note(inst, p, bar_start + k * beat, bar_start + k * beat + 0.15 * beat * 2, dynamics)
                else:
                    for k in range(8):
                        p = pitches[k % 3] + 12 * (k // 3 % 2)
                        _note(
                            inst,
                            p,
                            bar_start + k * beat / 2,
                            bar_start + (k + 1) * beat / 2,
                            dynamics + rng.randint(-10, 10),
                        )
            elif role == "bass":
                for k in range(4 if style != "sustained" else 1):
                    length = beat * (4 if style == "sustained" else (0.4 if style == "staccato" else 0.9))
                    start = bar_start + k * beat
                    _note(
                        inst,
                        degree_pitch(chord_degree, -2 + (k % 2 if style == "arpeggio" else 0)),
                        start,
                        start + length,
                        dynamics + rng.randint(-5, 15),
                    )
            else:  # melody: a random walk in the scale
                t = bar_start
                degree = chord_degree + 7
                while t < bar_start + 4 * beat - 1e-6:
                    length = beat * rng.choice([0.25, 0.5, 0.5, 1.0, 1.0, 2.0])
                    length = min(length, bar_start + 4 * beat - t)
                    if rng.random() > 0.1:  # a few rests
                        gate = 0.5 if style == "staccato" else rng.uniform(0.8, 1.0)
                        _note(
                            inst,
                            degree_pitch(degree, 1 if rng.random() < 0.3 else 0),
                            t,
                            t + length * gate,
                            dynamics + rng.randint(-20, 20),
                        )
                    degree = max(0, min(20, degree + rng.choice([-2, -1, -1, 0, 1, 1, 2, 3])))
                    t += length
        pm.instruments.append(inst)
    return pm


def note_survey(rng: random.Random, seconds: float) -> pretty_midi.PrettyMIDI:
    """Single notes and small chords of one instrument across its range: isolated timbres at many pitches."""
    pm = pretty_midi.PrettyMIDI()
    drum = rng.random() < 0.15
    inst = pretty_midi.Instrument(program=0 if drum else random_program(rng), is_drum=drum)
    low, high = (35, 81) if drum else sorted(rng.sample(range(28, 100), 2))
    _survey_notes(inst, rng, low, high, 0.0, seconds)
    pm.instruments.append(inst)
    return pm


SURVEY_NOTE_SECONDS = (0.1, 0.3, 0.6, 1.2, 2.5)


def _survey_notes(
    inst: pretty_midi.Instrument,
    rng: random.Random,
    low: int,
    high: int,
    start: float,
    seconds: float,
    lengths: tuple[float, ...] = SURVEY_NOTE_SECONDS,
) -> None:
    """Single notes and small chords of pitches `low`..`high`, each of one of `lengths` seconds, from `start` for
    `seconds` (the last may ring on)."""
    t = start
    while t < start + seconds:
        length = rng.choice(lengths)
        for _ in range(1 if rng.random() < 0.7 else rng.randint(2, 3)):
            _note(inst, rng.randint(low, max(low, high)), t, t + length, rng.randint(20, 127))
        t += length + rng.choice([0.0, 0.05, 0.3, 0.8])


def instrument_survey(
    seed: int, passes: int = 2, seconds: float = 2.5, per_piece: int = 4, groove_pieces: int = 6
) -> Iterator[tuple[str, pretty_midi.PrettyMIDI]]:
    """Every GM program and the drum kit, `passes` times each in a shuffled order, `seconds` of notes at a time
    (`_survey_notes`, from low to high registers), `per_piece` of them one after another in each piece; then
    `groove_pieces` pieces of `per_piece` drum grooves (`_drum_groove`) of `seconds` each, for the kit as songs play
    it: what a SoundFont sounds like, instrument by instrument, in (129 * passes + groove_pieces * per_piece) *
    seconds of music."""
    rng = random.Random(f"instruments-{seed}")
    voices = [voice for _ in range(passes) for voice in range(-1, 128)]  # -1: the drum kit
    rng.shuffle(voices)
    for index in range(0, len(voices), per_piece):
        pm = pretty_midi.PrettyMIDI()
        for k, voice in enumerate(voices[index : index + per_piece]):
            inst = pretty_midi.Instrument(program=max(voice, 0), is_drum=voice < 0)
            low, high = (35, 81) if voice < 0 else (rng.randint(28, 52), rng.randint(68, 100))
            _survey_notes(inst, rng, low, high, k * seconds, seconds, SURVEY_NOTE_SECONDS[:-1])
            pm.instruments.append(inst)
        yield f"instruments-{seed}-{index // per_piece:03d}", pm
    for index in range(groove_pieces):
        pm = pretty_midi.PrettyMIDI()
        inst = pretty_midi.Instrument(program=0, is_drum=True)
        for k in range(per_piece):
            _drum_groove(inst, rng, k * seconds, seconds)
        pm.instruments.append(inst)
        yield f"grooves-{seed}-{index:03d}", pm


TOMS = (41, 43, 45, 47, 48, 50)
PERCUSSION = tuple(range(60, 82))  # bongos, congas, timbales, agogo, cabasa, maracas, whistles, guiro, claves ...


def _drum_groove(inst: pretty_midi.Instrument, rng: random.Random, start: float, seconds: float) -> None:
    """`seconds` of a drum groove from `start` on a sixteenth-note grid at 80-170 bpm: a time-keeper (hi-hats, ride,
    maracas or tambourine), kick on the first and third beats and a few sixteenths, snare, clap or rimshot on the
    second and fourth with ghost notes, sometimes a crash on the first beat, hand percussion and a tom fill at the
    end; velocities vary by accent."""
    sixteenth = 60.0 / rng.uniform(80, 170) / 4
    keeper = rng.choice((CLOSED_HAT, CLOSED_HAT, OPEN_HAT, RIDE, MARACAS, TAMBOURINE))
    kick, backbeat = rng.choice((BASS_DRUM, KICK)), rng.choice((SNARE, SNARE, ELECTRIC_SNARE, CLAP, SIDE_STICK))
    steps = int(seconds / sixteenth)
    fill_from = steps - 4 if rng.random() < 0.5 else steps
    percussion = rng.sample(PERCUSSION, 2) if rng.random() < 0.5 else []
    for step in range(steps):
        t, beat_step = start + step * sixteenth, step % 16
        accent = 15 if step % 4 == 0 else 0
        if step >= fill_from:
            _note(inst, rng.choice(TOMS), t, t + 0.1, rng.randint(70, 120))
            continue
        if step % 2 == 0 or rng.random() < 0.3:
            _note(inst, keeper, t, t + 0.1, rng.randint(45, 90) + accent)
        if beat_step in (0, 8) or rng.random() < 0.08:
            _note(inst, kick, t, t + 0.1, rng.randint(85, 125))
        if beat_step in (4, 12):
            _note(inst, backbeat, t, t + 0.1, rng.randint(85, 125))
        elif rng.random() < 0.06:
            _note(inst, backbeat, t, t + 0.1, rng.randint(25, 50))
        if step == 0 and rng.random() < 0.5:
            _note(inst, rng.choice((CRASH, CRASH_2)), t, t + 0.1, rng.randint(90, 125))
        for key in percussion:
            if rng.random() < 0.25:
                _note(inst, key, t, t + 0.1, rng.randint(50, 110))


def generated_pieces(seed: int) -> Iterator[tuple[str, pretty_midi.PrettyMIDI]]:
    """An endless deterministic stream of generated pieces (3 of 4 ensembles, 1 of 4 note surveys)."""
    for index in range(10**9):
        rng = random.Random(f"{seed}-{index}")
        seconds = rng.uniform(15, 45)
        if index % 4 == 3:
            yield f"survey-{seed}-{index:05d}", note_survey(rng, seconds)
        else:
            yield f"gen-{seed}-{index:05d}", generated_piece(rng, seconds)


def reassign_instruments(pm: pretty_midi.PrettyMIDI, rng: random.Random, drum_probability: float = 0.3) -> None:
    """Give each part a random program (across Slakh classes); sometimes add a drum part."""
    for inst in pm.instruments:
        inst.is_drum = False
        inst.program = random_program(rng)
    end = pm.get_end_time()
    if end > 0 and rng.random() < drum_probability:
        drums = pretty_midi.Instrument(program=0, is_drum=True)
        beat = rng.uniform(0.35, 0.8)
        t = 0.0
        while t < end:
            _note(drums, CLOSED_HAT, t, t + 0.1, rng.randint(50, 90))
            if int(t / beat) % 2 == 0:
                _note(drums, KICK, t, t + 0.1, rng.randint(80, 120))
            else:
                _note(drums, SNARE, t, t + 0.1, rng.randint(70, 110))
            t += beat
        pm.instruments.append(drums)


def truncate(pm: pretty_midi.PrettyMIDI, seconds: float) -> None:
    """Keep the first `seconds` of a piece: notes starting later are dropped, notes sounding on are cut there."""
    for inst in pm.instruments:
        inst.notes = [n for n in inst.notes if n.start < seconds]
        for n in inst.notes:
            n.end = min(n.end, seconds)
        inst.control_changes = [c for c in inst.control_changes if c.time < seconds]
        inst.pitch_bends = [b for b in inst.pitch_bends if b.time < seconds]


def music21_pieces(
    seed: int, max_seconds: float = 90.0, skip: Callable[[str], bool] = lambda name: False
) -> Iterator[tuple[str, pretty_midi.PrettyMIDI]]:
    """Scores of music21's bundled corpus written as MIDI (first `max_seconds`), instruments re-assigned at random.

    `skip(name)` is asked before the (slow) parse, so a resumed build does not convert finished pieces again.
    """
    try:
        from music21 import corpus
    except ImportError:
        warnings.warn(
            "music21 is not installed, so its corpus is left out of the data set and the held-out split "
            "differs; install it with: pip install 'midisynth[data]'",
            stacklevel=2,
        )
        return
    paths = sorted(p for p in corpus.getPaths() if p.suffix in (".mxl", ".xml", ".musicxml", ".krn"))
    random.Random(seed).shuffle(paths)
    for path in paths:
        name = "m21-" + "-".join(path.with_suffix("").parts[-2:])
        if skip(name):
            continue
        try:
            with warnings.catch_warnings(), tempfile.TemporaryDirectory() as tmp:
                warnings.simplefilter("ignore")
                score = corpus.parse(str(path))
                out = Path(tmp) / "score.mid"
                score.write("midi", fp=str(out))
                pm = pretty_midi.PrettyMIDI(io.BytesIO(out.read_bytes()))
        except Exception:  # music21 cannot convert every corpus file; skip those
            continue
        truncate(pm, max_seconds)
        if not any(inst.notes for inst in pm.instruments):
            continue
        reassign_instruments(pm, random.Random(f"{seed}-{name}"))
        yield name, pm


def folder_pieces(
    folder: Path, on_skip: Callable[[str], None] = lambda line: None
) -> Iterator[tuple[str, pretty_midi.PrettyMIDI]]:
    """User MIDI files, as they are; each one that cannot be read is reported to `on_skip` (one line) and left out."""
    for path in find_midi_files(folder):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                pm = pretty_midi.PrettyMIDI(str(path))
        except Exception as err:  # noqa: BLE001  pretty_midi and mido raise many types for unreadable files
            reason = (str(err).strip().splitlines() or [type(err).__name__])[0]
            on_skip(f"{path}: unreadable MIDI ({reason})")
            continue
        yield "user-" + "-".join(path.relative_to(folder).with_suffix("").parts), pm


def interleave(*sources: Iterator[tuple[str, pretty_midi.PrettyMIDI]]) -> Iterator[tuple[str, pretty_midi.PrettyMIDI]]:
    """Round-robin over sources until all are exhausted."""
    active = list(sources)
    while active:
        for source in list(active):
            try:
                yield next(source)
            except StopIteration:
                active.remove(source)
