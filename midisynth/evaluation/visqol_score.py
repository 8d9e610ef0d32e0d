"""ViSQOL (audio mode) MOS-LQO of a render against its reference: the usual measure of a vocoder's quality.

Both signals are cut to their first 10 s, resampled 16 kHz -> 48 kHz (ViSQOL's audio mode works at 48 kHz),
and the candidate is scaled to the reference's RMS; scores run from 1 (bad) to about 4.75 (identical).
`visqol-python` (the `eval` extra) is a pure-Python port of Google's ViSQOL v3 that ships its SVR model.
"""

from __future__ import annotations

import numpy as np
import soxr

from midisynth.constants import SAMPLE_RATE
from midisynth.evaluation.metrics import scale_to_rms

EXCERPT_SECONDS = 10.0
VISQOL_RATE = 48_000  # Hz, the rate of ViSQOL's audio mode


class VisqolScorer:
    """ViSQOL's audio mode, created once. Raises ImportError naming the install command without visqol-python."""

    def __init__(self):
        try:
            from visqol import VisqolApi
        except ImportError:
            raise ImportError("ViSQOL needs visqol-python: pip install 'midisynth[eval]'") from None
        self._api = VisqolApi()
        self._api.create(mode="audio")

    def moslqo(self, candidate: np.ndarray, reference: np.ndarray, sample_rate: int = SAMPLE_RATE) -> float:
        """MOS-LQO of mono `candidate` against mono `reference` [samples] at `sample_rate` Hz (first 10 s)."""
        keep = int(EXCERPT_SECONDS * sample_rate)
        ref = soxr.resample(np.asarray(reference[:keep], np.float64), sample_rate, VISQOL_RATE)
        deg = soxr.resample(np.asarray(candidate[:keep], np.float64), sample_rate, VISQOL_RATE)
        return float(self._api.measure_from_arrays(ref, scale_to_rms(deg, ref).astype(np.float64), VISQOL_RATE).moslqo)
