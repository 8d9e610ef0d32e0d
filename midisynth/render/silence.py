"""Silence where the score is silent: the rendered audio is muted outside the spans in which notes sound.

The network draws a faint noise floor everywhere, nothing in its inputs tells a rest from a quiet passage, and a
vocoder working on 40 ms windows spreads each attack over the 20-40 ms before it: rests hiss, and a rest's last
frames carry the next attack early, where the reference is digitally silent. The score knows better. A span runs
from a note's onset, rising over RAMP_SECONDS (a sampled instrument's attack starts a few milliseconds after its
note-on), to TAIL_SECONDS after it stops sounding (`frames.sounding_end`), which leaves room for releases and
reverb. Within a span the audio passes unchanged, except over its last FADE_SECONDS, where it fades out (raised
cosine); outside every span it is zero.
"""

from __future__ import annotations

import numpy as np

from midisynth.constants import SAMPLE_RATE
from midisynth.score.frames import sounding_end
from midisynth.score.midi import Song

RAMP_SECONDS = 0.005  # fade-in from an onset that follows silence (no click, no early attack)
TAIL_SECONDS = 1.2  # a span lasts this long after its last note stops sounding
FADE_SECONDS = 0.4  # the last part of that, over which the audio fades out
LOOK_BACK = 3  # spans whose fade-out can still overlap a sample: the last begun at or before it and those before


class SilenceGate:
    """A song's sounding spans, in samples at 16 kHz, and the gain they give each sample."""

    def __init__(self, song: Song):
        spans = sorted((note.start, sounding_end(note)) for note in song.notes)
        begins: list[float] = []
        ends: list[float] = []
        for start, end in spans:  # seconds; a span begun before the last one starts to fade out joins it
            stop = end + TAIL_SECONDS
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
