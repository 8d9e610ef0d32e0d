"""The sound card, through PortAudio (the sounddevice package, the `play` extra), as an output of `jobs.play`.

The output is opened mono at the model's 16 kHz where the device takes it (PortAudio's ALSA default device
resamples through ALSA's plug layer), else in stereo and/or at the device's own rate; the player resamples to that
rate (soxr) and the same samples go to every channel. Every way of failing to get sound out (sounddevice or the
PortAudio library missing, no output device, a device that refuses every setting) raises one exception with a
one-line message.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from midisynth.constants import SAMPLE_RATE
from midisynth.extras import import_extra


class SoundCardError(RuntimeError):
    """No sound out of this machine: no output device, or one that cannot be opened; the message says which."""


def _sounddevice():
    """The sounddevice module; ImportError with the install hints when it or the PortAudio library is missing."""
    try:
        return import_extra("sounddevice", "play", "play")
    except OSError as err:  # sounddevice is installed, but found no PortAudio library to load
        raise ImportError(
            f"play needs the PortAudio library ({err}): apt-get install libportaudio2 (Debian, "
            "Ubuntu), dnf install portaudio (Fedora) or brew install portaudio (macOS)"
        ) from None


def output_device(device: str | int | None = None) -> dict:
    """PortAudio's description of an output device (sounddevice.query_devices): `device` is its number (also as a
    string of digits) or a part of its name; None is the system's default output. SoundCardError when there is
    none."""
    sd = _sounddevice()
    try:
        return sd.query_devices(int(device) if isinstance(device, str) and device.isdigit() else device, kind="output")
    except (ValueError, sd.PortAudioError) as err:
        if device is None:
            raise SoundCardError(
                "no audio output device to play on (PortAudio finds none); render to a file "
                "instead: midisynth render SONG -o song.wav"
            ) from None
        raise SoundCardError(f"{err} (python -m sounddevice lists the devices)") from None


class SoundCard:
    """An output device, open and silent until `start`: `jobs.play.AudioOutput` on a sound card. Close it (or use
    it as a context manager) when done; it can play again after `stop`."""

    def __init__(self, device: str | int | None = None):
        """Open `device` (see `output_device`); SoundCardError when it cannot be opened in any way midisynth plays."""
        self._sd = sd = _sounddevice()
        info = output_device(device)
        self.name = f"{info['name']} ({sd.query_hostapis(info['hostapi'])['name']})"
        self.sample_rate, channels = self._settings(info)  # Hz
        self._fill: Callable[[np.ndarray], None] | None = None
        try:
            self._stream = sd.OutputStream(
                samplerate=self.sample_rate,
                device=info["index"],
                channels=channels,
                dtype="float32",
                callback=self._callback,
            )
        except sd.PortAudioError as err:
            raise SoundCardError(f"{self.name}: cannot open it for playback ({err})") from None

    def _settings(self, info: dict) -> tuple[int, int]:
        """(rate in Hz, channels) to open the device with: 16 kHz before its own rate, mono before stereo."""
        rates = dict.fromkeys([SAMPLE_RATE, int(info["default_samplerate"])])
        for rate in rates:
            for channels in (1, 2):
                try:
                    self._sd.check_output_settings(info["index"], channels=channels, dtype="float32", samplerate=rate)
                    return rate, channels
                except self._sd.PortAudioError:
                    continue
        raise SoundCardError(f"{self.name}: takes neither mono nor stereo at {' or '.join(map(str, rates))} Hz")

    def _callback(self, outdata: np.ndarray, frames: int, time, status) -> None:
        """PortAudio's thread asks for the next `frames` samples, [frames, channels] (the stream starts with a fill)."""
        assert self._fill is not None
        self._fill(outdata[:, 0])
        outdata[:, 1:] = outdata[:, :1]

    @property
    def active(self) -> bool:
        return self._stream.active

    def start(self, fill: Callable[[np.ndarray], None]) -> None:
        self._fill = fill
        try:
            self._stream.start()
        except self._sd.PortAudioError as err:
            raise SoundCardError(f"{self.name}: cannot start playback ({err})") from None

    def stop(self, drain: bool) -> None:
        if drain:
            self._stream.stop()  # returns once the device has played what it holds
        else:
            self._stream.abort()

    def close(self) -> None:
        self._stream.close()

    def __enter__(self) -> SoundCard:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
