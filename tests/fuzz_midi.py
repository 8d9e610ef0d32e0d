"""Coverage-guided fuzz target (atheris, libFuzzer) for the MIDI reading path: every input either reads into a song
that tokenizes into valid windows, or raises MidiError with a message; any other exception is a crash.

    python tests/fuzz_midi.py NEW_CORPUS_DIR tests/data/midi -max_total_time=3600

tests/test_midi.py runs it briefly; libFuzzer's options (-runs, -max_len, ...) pass through.
"""

from __future__ import annotations

import sys

import atheris

with atheris.instrument_imports(include=["midisynth", "mido", "pretty_midi"]):
    from midisynth.score.midi import MidiError, SongLimits, read_midi
    from midisynth.score.tokens import VOCAB_SIZE, num_windows, tokenize

from midisynth.constants import EOS_ID

# Few events, so that inputs over 2 kB also go through the event count that precedes parsing; the length limit
# of every render.
LIMITS = SongLimits(max_events=1000)


def check_one_input(data: bytes) -> None:
    try:
        song = read_midi(data, LIMITS)
    except MidiError as err:
        assert str(err), "MidiError without a message"
        return
    windows = tokenize(song)
    assert len(windows) == num_windows(song.duration)
    for window in windows:
        assert window[-1] == EOS_ID and all(0 < token < VOCAB_SIZE for token in window), window


if __name__ == "__main__":
    atheris.Setup(sys.argv, check_one_input)
    atheris.Fuzz()
