"""Silence where the score is silent: the rendered audio is muted outside the spans in which notes sound, and the
pre-echo a vocoder draws before each attack is taken out.

The network draws a faint noise floor everywhere, nothing in its inputs tells a rest from a quiet passage, and a
vocoder working on 40 ms windows spreads each attack over the 20-40 ms before it: rests hiss, and a rest's last
frames carry the next attack early, where the reference is digitally silent. The score knows better.

`SilenceGate`: a span runs from a note's onset, rising over RAMP_SECONDS (a sampled instrument's attack starts a few
milliseconds after its note-on), to TAIL_SECONDS after it stops sounding (`frames.sounding_end`), which leaves room
for releases and reverb, and no further than the end of the audio, so that a render ends faded out rather than cut.
Within a span the audio passes unchanged, except over its last FADE_SECONDS, where it fades out (raised cosine);
outside every span it is zero.

`PreEchoGuard`: within a span (a note that follows another one's release), the same early attack rises out of the
quieter sound before it. Over the 30 ms before each onset (PRE_ECHO_BLOCKS), the audio's envelope (its RMS over
blocks of ENVELOPE_SAMPLES) is held to the loudest it was over the 10 ms before that (LEVEL_BLOCKS): what already
sounded passes, what rises early is scaled down to it. The last block's gain holds to the onset and rises to 1 over
the RAMP_SECONDS after it, as an onset out of silence does. Onsets that follow another within those 40 ms (a strummed
chord, a roll) are left alone: the rise before them is the earlier note's attack.

`silence_stream` applies both to a render's audio chunks; `silence` to a whole render.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Iterator

import numpy as np

from midisynth.constants import SAMPLE_RATE
from midisynth.score.frames import sounding_end
from midisynth.score.midi import Song

RAMP_SECONDS = 0.005  # fade-in from an onset that follows silence (no click, no early attack)
TAIL_SECONDS = 1.2  # a span lasts this long after its last note stops sounding
FADE_SECONDS = 0.4  # the last part of that, over which the audio fades out
LOOK_BACK = 3  # spans whose fade-out can still overlap a sample: the last begun at or before it and those before
ENVELOPE_SAMPLES = 40  # 2.5 ms: the blocks over which the envelope is measured
PRE_ECHO_BLOCKS = 12  # 30 ms before an onset, where a vocoder's 40 ms windows draw its attack early
LEVEL_BLOCKS = 4  # 10 ms before that, where the level the pre-echo is held to is measured
RISE_SAMPLES = round(RAMP_SECONDS * SAMPLE_RATE)  # after an onset, over which the guard's gain rises back to 1


class SilenceGate:
    """A song's sounding spans, in samples at 16 kHz, and the gain they give each sample."""

    def __init__(self, song: Song, end_seconds: float = np.inf):
        """`end_seconds`: the length of the audio to gate; the last span fades out by then."""
        spans = sorted((note.start, sounding_end(note)) for note in song.notes)
        begins: list[float] = []
        ends: list[float] = []
        for start, end in spans:  # seconds; a span begun before the last one starts to fade out joins it
            stop = min(end + TAIL_SECONDS, end_seconds)
            if ends and start <= ends[-1] - FADE_SECONDS:
                ends[-1] = max(ends[-1], stop)
            else:
                begins.append(start)
                ends.append(stop)
        self.begins = np.array(begins) * SAMPLE_RATE  # [spans] samples
        self.ends = np.array(ends) * SAMPLE_RATE  # [spans] samples

    def gain(self, first: int, count: int) -> np.ndarray:
        """[count] float32: the gain of samples [first, first + count): the largest of the spans' envelopes, each 1
        within its span but for a raised-cosine rise over its first RAMP_SECONDS and fall over its last FADE_SECONDS,
        and 0 outside. So a note that follows a fading one starts from the fade's gain: its attack is not drawn early
        over a quiet tail."""
        if self.begins.shape[0] == 0:  # no notes: all silence
            return np.zeros(count, np.float32)
        span = int(np.searchsorted(self.begins, first, side="right")) - 1
        if (
            span >= 0
            and self.begins[span] + RAMP_SECONDS * SAMPLE_RATE <= first
            and (first + count <= self.ends[span] - FADE_SECONDS * SAMPLE_RATE)
        ):
            return np.ones(count, np.float32)  # within one span's steady part: the common case, at no cost
        samples = np.arange(first, first + count, dtype=np.float64)
        last = np.searchsorted(self.begins, samples, side="right") - 1  # the last span begun at or before each sample
        gain = np.zeros(count)
        for back in range(LOOK_BACK):
            spans = last - back  # each sample's span `back` before its last
            valid = spans >= 0
            begin = np.where(valid, self.begins[np.maximum(spans, 0)], np.inf)
            end = np.where(valid, self.ends[np.maximum(spans, 0)], -np.inf)
            rise = np.clip((samples - begin) / (RAMP_SECONDS * SAMPLE_RATE), 0.0, 1.0)
            fall = np.clip((end - samples) / (FADE_SECONDS * SAMPLE_RATE), 0.0, 1.0)
            gain = np.maximum(gain, 0.5 - 0.5 * np.cos(np.pi * np.minimum(rise, fall)))
        return gain.astype(np.float32)

    def apply(self, audio: np.ndarray, first: int = 0) -> np.ndarray:
        """`audio` [samples] (starting at song sample `first`) times the gain."""
        return audio * self.gain(first, audio.shape[0])


class PreEchoGuard:
    """Holds the audio's envelope before each of a song's onsets to its level just before (see the module's
    docstring). Fed a render's audio chunk by chunk (`push`, then `finish`), it gives the same samples back
    45 ms later: an onset's pre-echo is taken out before the audio before it is passed on."""

    def __init__(self, song: Song):
        self.held = (PRE_ECHO_BLOCKS + LEVEL_BLOCKS) * ENVELOPE_SAMPLES  # samples kept back: pre-echo and level window
        starts = np.unique([note.start for note in song.notes])  # seconds, sorted
        isolated = starts[np.diff(starts, prepend=-np.inf) > self.held / SAMPLE_RATE]  # no other onset just before
        onsets = np.round(isolated * SAMPLE_RATE).astype(np.int64)  # [onsets] samples
        self.onsets = onsets[onsets >= self.held]  # (before that, the gate's rise from silence starts the song)
        self.buffer = np.zeros(0, np.float32)  # audio of samples [self.start, self.start + len(buffer))
        self.start = 0
        self.next_onset = 0  # index into `onsets` of the first not yet guarded

    def push(self, chunk: np.ndarray) -> np.ndarray:
        """The next chunk of audio in; out, the guarded audio that no later onset can change (shorter or longer)."""
        self.buffer = np.concatenate([self.buffer, chunk.astype(np.float32, copy=False)])
        stop = int(np.searchsorted(self.onsets, self.start + self.buffer.shape[0] - RISE_SAMPLES, side="right"))
        if stop > self.next_onset:  # onsets whose level window, pre-echo and rise are all buffered
            self._guard(self.onsets[self.next_onset : stop])
            self.next_onset = stop
        ready = max(self.buffer.shape[0] - self.held - RISE_SAMPLES, 0)  # before any unguarded onset's level window
        out, self.buffer = self.buffer[:ready], self.buffer[ready:]
        self.start += ready
        return out

    def finish(self) -> np.ndarray:
        """The audio still held back, the onsets within it guarded (a rise past the audio's end is cut)."""
        end = self.start + self.buffer.shape[0]
        pending = self.onsets[self.next_onset :]
        pending = pending[pending < end]
        if pending.shape[0]:
            length = self.buffer.shape[0]
            self.buffer = np.pad(self.buffer, (0, RISE_SAMPLES))
            self._guard(pending)
            self.buffer = self.buffer[:length]
        self.next_onset = self.onsets.shape[0]
        out, self.buffer = self.buffer, np.zeros(0, np.float32)
        self.start += out.shape[0]
        return out

    def _guard(self, onsets: np.ndarray) -> None:
        """Scale the buffered audio over the PRE_ECHO_BLOCKS before each of `onsets` [n] (samples of the song, at
        least `held` apart) down to the envelope's peak over the LEVEL_BLOCKS before them, rising back to 1 over the
        RISE_SAMPLES after each onset."""
        index = (onsets - self.held - self.start)[:, None] + np.arange(self.held + RISE_SAMPLES)  # [n, held + rise]
        blocks = self.buffer[index[:, : self.held]].reshape(onsets.shape[0], -1, ENVELOPE_SAMPLES).astype(np.float64)
        envelope = np.sqrt(np.mean(np.square(blocks), axis=2))  # [n, LEVEL_BLOCKS + PRE_ECHO_BLOCKS]
        level = envelope[:, :LEVEL_BLOCKS].max(axis=1, keepdims=True)  # [n, 1]
        gains = np.minimum(1.0, level / np.maximum(envelope[:, LEVEL_BLOCKS:], 1e-12))  # [n, PRE_ECHO_BLOCKS]
        padded = np.pad(gains, ((0, 0), (1, 1)), mode="edge")
        gains = np.minimum(np.minimum(padded[:, :-2], padded[:, 1:-1]), padded[:, 2:])  # a block's or a neighbour's:
        ones = np.ones((onsets.shape[0], 1))  # a rise within a block is caught from its start
        gain = np.concatenate([gains, ones], axis=1) @ _pre_echo_ramp()  # [n, pre-echo + rise samples]
        self.buffer[index[:, LEVEL_BLOCKS * ENVELOPE_SAMPLES :]] *= gain.astype(np.float32)


@functools.cache
def _pre_echo_ramp() -> np.ndarray:
    """[PRE_ECHO_BLOCKS + 1, PRE_ECHO_BLOCKS * ENVELOPE_SAMPLES + RISE_SAMPLES]: the gains of the pre-echo blocks, at
    their centres, the last one held to the onset, and 1 at the end of the rise after it, linearly interpolated to
    every sample in between."""
    samples = PRE_ECHO_BLOCKS * ENVELOPE_SAMPLES
    centres = np.concatenate([(np.arange(PRE_ECHO_BLOCKS) + 0.5) * ENVELOPE_SAMPLES, [samples, samples + RISE_SAMPLES]])
    knots = np.eye(PRE_ECHO_BLOCKS + 1)[:, [*range(PRE_ECHO_BLOCKS), PRE_ECHO_BLOCKS - 1, PRE_ECHO_BLOCKS]]
    return np.stack([np.interp(np.arange(samples + RISE_SAMPLES), centres, unit) for unit in knots])


def silence_stream(song: Song, chunks: Iterable[np.ndarray], num_samples: int) -> Iterator[np.ndarray]:
    """A render's audio chunks (float32, 16 kHz, `num_samples` in all, from the song's start) gated by the song's
    `SilenceGate` and then its `PreEchoGuard`: the same samples in all, in chunks of other sizes."""
    gate, guard = SilenceGate(song, num_samples / SAMPLE_RATE), PreEchoGuard(song)
    position = 0  # samples from the song's start
    for chunk in chunks:
        out = guard.push(gate.apply(chunk, position))
        position += chunk.shape[0]
        if out.shape[0]:
            yield out
    yield guard.finish()


def silence(song: Song, audio: np.ndarray) -> np.ndarray:
    """A whole render's audio [samples] through `silence_stream`."""
    return np.concatenate(list(silence_stream(song, [audio], audio.shape[0])))
