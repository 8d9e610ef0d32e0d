"""MIDI → tokens → windows of spectrogram (diffusion, each window conditioned on the previous) → audio.

The library entry point is `Synthesizer`:

    synth = Synthesizer.from_pretrained()            # bundled default model, CPU or CUDA
    audio = synth.render("song.mid")                  # float32 [samples] at 16 kHz
    for chunk in synth.stream(song): ...              # bounded memory, one window at a time

One loop (`Synthesizer._generate`) makes every spectrogram: a song rendered alone is a batch of one.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, replace
from numbers import Integral
from pathlib import Path

import numpy as np
import torch

from midisynth.audio import from_network_range, to_network_range
from midisynth.constants import (
    DEFAULT_PRECISION,
    FRAME_RATE,
    HOP_LENGTH,
    MIN_LOG_MEL,
    N_MELS,
    WINDOW_FRAMES,
    WINDOW_SECONDS,
)
from midisynth.model import samplers
from midisynth.model.checkpoints import Checkpoint
from midisynth.model.low_precision import AUTOCAST_DTYPES, network_in
from midisynth.model.networks import SpectrogramDiffusion
from midisynth.model.noise_schedule import eps_from_v
from midisynth.model.note_inputs import NoteInputs, apply_gain, song_note_inputs
from midisynth.model.partials import (
    NoteReach,
    Partials,
    check_mix,
    load_partials,
    mix_log_mel,
    mix_shares,
    onset_shares,
    rest_frames,
    shares_at,
)
from midisynth.model.refiner import Refiner, load_refiner
from midisynth.model.resolve import resolve_model
from midisynth.precision import check_precision, hardware, resolve_precision
from midisynth.render.silence import silence_stream
from midisynth.score.midi import Song, read_midi, type2_notice
from midisynth.score.tokens import cut_seconds, fit_window, num_windows, pad_tokens, tokenize
from midisynth.vocoders.vocoder import Vocoder, load_vocoder

log = logging.getLogger(__name__)  # without logging configured, warnings print as bare lines on stderr

FALLBACK_VOCODER = "griffin-lim"  # used when a model ships no vocoder, or its vocoder cannot run here
RELEASE_TAIL_SECONDS = 1.0  # audio kept after the last note end, for the release of the final notes
MIN_PADDED_TOKENS = 64  # windows are padded to at least this many tokens (see `padded_length`)


@dataclass(frozen=True)
class RenderOptions:
    """How each window is sampled. `sampler`, `steps` and `guidance` left as None take the model's own sampling
    defaults (`SamplingDefaults`, stored with the model); a sampler other than the model's without `steps` takes
    that sampler's usual step count."""

    sampler: str | None = None
    steps: int | None = None
    guidance: float | None = None  # classifier-free guidance weight; 1 disables it
    seed: int = 0
    # Network arithmetic: auto (bf16 where the hardware has it natively, else int8 on x86 CPUs, else fp32; see
    # midisynth.precision), fp32, bf16, fp16 (CUDA only) or int8 (CPU only, quantized Linear layers); bf16 and fp16
    # run under autocast; the sampler state stays fp32.
    precision: str = DEFAULT_PRECISION
    # Share of the partials model (midisynth.model.partials) in the rendered spectrogram, 0 to 1 (0: the network
    # alone); None takes the partials model's own default, or 0 for a model without one.
    partials_mix: float | None = None
    # Whether a model's refiner (midisynth.model.refiner) corrects the mix of the network and the partials model;
    # it has nothing to correct without a partials share.
    refine: bool = True

    def __post_init__(self) -> None:
        for name, value in (("steps", self.steps), ("seed", self.seed)):
            if (value is not None or name == "seed") and (isinstance(value, bool) or not isinstance(value, Integral)):
                raise TypeError(f"{name} must be a whole number, got {value!r}")
        if self.sampler is not None and self.sampler not in samplers.SAMPLERS:
            raise ValueError(f"unknown sampler {self.sampler!r}; choose from {', '.join(samplers.SAMPLERS)}")
        if self.steps is not None:
            samplers.check_steps(self.sampler, self.steps)
        if self.guidance is not None and not 1.0 <= self.guidance < math.inf:
            raise ValueError(f"guidance must be a finite number >= 1 (1 disables it), got {self.guidance}")
        if not -(2**63) <= self.seed < 2**64:  # what torch.Generator.manual_seed takes (negative ones wrap around)
            raise ValueError(f"seed {self.seed} does not fit in 64 bits; use 0 to {2**64 - 1}")
        check_precision(self.precision)
        if not isinstance(self.refine, bool):
            raise TypeError(f"refine must be True or False, got {self.refine!r}")
        if self.partials_mix is not None:
            check_mix(self.partials_mix)

    def sampling(self, defaults: samplers.SamplingDefaults) -> samplers.SamplingDefaults:
        """The sampler, steps and guidance these options render with: theirs, with what they leave unset taken from
        a model's sampling `defaults`."""
        sampler = self.sampler or defaults.sampler
        if self.steps is not None:
            steps = self.steps
        else:
            steps = defaults.steps if sampler == defaults.sampler else samplers.SAMPLERS[sampler].default_steps
        return samplers.SamplingDefaults(sampler, steps, defaults.guidance if self.guidance is None else self.guidance)

    def resolved(self, defaults: samplers.SamplingDefaults) -> RenderOptions:
        """These options with what they leave unset taken from a model's sampling `defaults`."""
        chosen = self.sampling(defaults)
        return replace(self, sampler=chosen.sampler, steps=chosen.steps, guidance=chosen.guidance)


def pick_device(device: str = "auto") -> torch.device:
    """'auto' → CUDA when available, else CPU; 'cuda' without a GPU is a clear error."""
    if not isinstance(device, str):
        raise TypeError(f"device must be 'auto', 'cpu' or 'cuda[:N]', got {device!r}")
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError("--device cuda was asked for, but no CUDA GPU is available to torch")
    if device not in ("cpu",) and not device.startswith("cuda"):
        raise ValueError(f"unknown device {device!r}; use auto, cpu or cuda")
    return torch.device(device)


def padded_length(tokens: int, max_tokens: int) -> int:
    """The length a window of `tokens` tokens is padded to: the next power of two from MIN_PADDED_TOKENS, at most
    `max_tokens`. It depends on the window alone, never on the windows it is batched with: the padding is masked, but
    bf16 arithmetic rounds differently at another length, so a song rendered with others would sound different from
    the same song alone (docs/usage.md, "Batches")."""
    return min(max_tokens, max(MIN_PADDED_TOKENS, 1 << (tokens - 1).bit_length()))


def padded_length_groups(windows: list[list[int]], max_tokens: int) -> dict[int, list[int]]:
    """The windows' positions by their `padded_length`: each group is encoded and sampled as one batch."""
    groups: dict[int, list[int]] = {}
    for position, window in enumerate(windows):
        groups.setdefault(padded_length(len(window), max_tokens), []).append(position)
    return groups


def song_frames(song: Song, num_windows: int) -> int:
    """Frames to keep: the song's length plus a release tail, within the generated windows."""
    wanted = math.ceil((song.duration + RELEASE_TAIL_SECONDS) * FRAME_RATE)
    return min(wanted, num_windows * WINDOW_FRAMES)


class Synthesizer:
    """Renders MIDI with a Spectrogram Diffusion model and a vocoder."""

    def __init__(
        self,
        model: SpectrogramDiffusion,
        vocoder: Vocoder,
        device: torch.device | str = "cpu",
        options: RenderOptions | None = None,
        sampling: samplers.SamplingDefaults | None = None,
        partials: Partials | None = None,
        refiner: Refiner | None = None,
    ):
        """`sampling`: the model's sampling defaults (None: those of its prediction type); `options` override them.
        `partials`: the model's fitted partials model, mixed into renders (`RenderOptions.partials_mix`); `refiner`:
        its refiner, which corrects that mix (`RenderOptions.refine`)."""
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.vocoder = vocoder
        self.sampling = sampling or samplers.default_sampling(model.cfg.prediction)
        self.partials = partials
        self.refiner = None if refiner is None else refiner.to(self.device).eval()
        self.requested = options or RenderOptions()  # as given, unset fields included
        self.options = self.requested.resolved(self.sampling)
        self.precision()  # refuses here, not mid-render, a precision this device cannot compute in
        self.partials_mix()  # and a partials share without a partials model
        self._networks: dict[str, SpectrogramDiffusion] = {"fp32": self.model}  # by precision, made on first use

    @classmethod
    def from_pretrained(
        cls,
        model: str | Path | None = None,
        device: str = "auto",
        vocoder: str | None = None,
        options: RenderOptions | None = None,
        allow_pickle: bool = False,
    ) -> Synthesizer:
        """Load a model (None: the bundled default; a directory: diffusers layout; a file: midisynth format; a hub
        id `owner/name[@revision]`: the Hugging Face cache).

        The vocoder defaults to the one shipped with the model (see `checkpoint_vocoder`), else Griffin-Lim;
        sampling options left unset in `options` take the model's stored defaults (`Checkpoint.sampling`).
        """
        dev = pick_device(device)
        chosen = load_vocoder(vocoder, dev) if vocoder else None  # a bad vocoder is reported before a model loads
        checkpoint: Checkpoint = resolve_model(model, allow_pickle=allow_pickle)
        partials = None if checkpoint.partials_path is None else load_partials(checkpoint.partials_path)
        refiner = None if checkpoint.refiner_path is None else load_refiner(checkpoint.refiner_path)
        return cls(
            checkpoint.model,
            chosen or checkpoint_vocoder(checkpoint, dev),
            dev,
            options,
            checkpoint.sampling,
            partials,
            refiner,
        )

    # -- settings ---------------------------------------------------------------------------------------------------
    def precision(self, options: RenderOptions | None = None) -> str:
        """The precision the networks compute in for `options` (default: this synthesizer's): "auto" resolved for
        this device (`midisynth.precision.resolve_precision`)."""
        requested = (options or self.options).precision
        return resolve_precision(requested, hardware(self.device.type, self.device.index))

    def partials_mix(self, options: RenderOptions | None = None) -> float:
        """The partials model's share in renders with `options` (default: this synthesizer's): theirs if set, else
        the partials model's default, else 0. ValueError for a share above 0 without a partials model."""
        requested = (options or self.options).partials_mix
        if requested is None:
            return 0.0 if self.partials is None else self.partials.mix
        if requested > 0 and self.partials is None:
            raise ValueError(
                f"partials {requested:g} asked for, but this model has no partials model (fit one with "
                "`midisynth fit-partials` and put it beside the model file as partials.safetensors)"
            )
        return requested

    def _network(self, precision: str) -> SpectrogramDiffusion:
        """The model as it computes in `precision` (`midisynth.model.low_precision`), made once, on first use."""
        if precision not in self._networks:
            self._networks[precision] = network_in(self.model, precision)
        return self._networks[precision]

    def _denoiser(
        self, network: SpectrogramDiffusion, cache, guidance: float, modulations: dict[float, list]
    ) -> samplers.Denoiser:
        """ε(x, t) for the samplers: the decoder's output (converted from v for v-models), guided if asked.

        `modulations`: the decoder's noise modulation (`FilmDecoder.noise_modulation`) by noise time, filled as times
        come and kept across windows, which the samplers visit at the same times: computed once per time, for one
        row, it serves every row of a batch sampled at that time.
        """

        def decode(x, t, cache):
            modulation = None
            if bool((t == t[0]).all()):
                key = float(t[0])
                if key not in modulations:
                    modulations[key] = network.decoder.noise_modulation(t[:1], x.dtype)
                modulation = modulations[key]
            return network.decoder(x, t, cache, modulation)

        if network.cfg.prediction == "v":

            def decoder(x, t, cache):
                return eps_from_v(x, decode(x, t, cache).float(), t)
        else:
            decoder = decode
        if guidance == 1.0:
            return lambda x, t: decoder(x, t, cache)

        def guided(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            eps = decoder(torch.cat([x, x]), torch.cat([t, t]), cache)  # rows past the cache: unconditional
            cond, uncond = eps.chunk(2)
            return guidance * cond - (guidance - 1.0) * uncond

        return guided

    # -- the render loop -----------------------------------------------------------------------------------------------
    def _score(self, song: Song) -> _Score:
        """What the render loop needs of `song`."""
        windows = self.tokenize(song)
        return _Score(windows, song_frames(song, len(windows)), self.note_inputs(song) if song.notes else None, song)

    @torch.inference_mode()
    def _generate(
        self, scores: list[_Score], options: RenderOptions | None, on_window: Callable[[int, int], None] | None
    ) -> Iterator[tuple[int, np.ndarray, bool]]:
        """The render loop: the spectrograms of several songs generated together, window k of every song that has
        one in one batch. Yields (song number, its next part [frames, 128] log-mel, whether it is its last part), a
        song's parts in order; songs without notes first (floor-level features, without running the network).

        Each window is conditioned on its song's previous window as the network made it; the gain a model with
        velocity gain applies, the partials model's share and the refiner's correction are added to what is yielded,
        never to that context.
        Each song draws its noise from its own generator seeded with `options.seed`, and its windows are padded to
        lengths of their own (`padded_length`; the windows of one length are sampled as one batch), so batching
        changes its result only by the batch size's rounding in matrix products: none at bf16 on CPUs that compute
        it natively, a few LSB at fp32 (docs/usage.md, "Batches").
        """
        opts = options or self.options
        sampling, mix = opts.sampling(self.sampling), self.partials_mix(opts)
        total, done = sum(len(score.windows) for score in scores), 0
        playing = []
        for number, score in enumerate(scores):
            if score.song is not None and not score.song.notes:
                for index, part in enumerate(_silence(score.frames, len(score.windows))):
                    done += 1
                    if on_window is not None:
                        on_window(done, total)
                    yield number, part, index == len(score.windows) - 1
            else:
                playing.append(number)
        if not playing:
            return
        partials = self.partials if mix > 0 else None
        refiner = self.refiner if partials is not None and opts.refine else None
        reaches = {
            n: (song, NoteReach(song)) for n in playing if partials is not None and (song := scores[n].song) is not None
        }
        network = self._network(self.precision(opts))
        generators = [torch.Generator().manual_seed(opts.seed) for _ in playing]
        context = torch.zeros(len(playing), WINDOW_FRAMES, N_MELS, device=self.device)  # network range
        modulations: dict[float, list] = {}  # see _denoiser
        for index in range(max(len(scores[n].windows) for n in playing)):
            active = [row for row, n in enumerate(playing) if index < len(scores[n].windows)]  # rows of `playing`
            windows = [
                fit_window(scores[playing[row]].windows[index], self.model.cfg.max_tokens, warn=False) for row in active
            ]
            x = torch.empty(len(active), WINDOW_FRAMES, N_MELS, device=self.device)
            for length, members in padded_length_groups(windows, self.model.cfg.max_tokens).items():
                rows = [active[m] for m in members]
                tokens = torch.from_numpy(pad_tokens([windows[m] for m in members], length=length)).to(self.device)
                cue = self._window_inputs([scores[playing[row]] for row in rows], index, "cue")
                x[members] = self._sample_window(
                    network,
                    sampling,
                    opts,
                    tokens,
                    index,
                    cue,
                    context[rows],
                    [generators[row] for row in rows],
                    modulations,
                )
            features = from_network_range(x)  # [active, 256, 128] log-mel (velocity-normalised for gain models)
            context[active] = to_network_range(features)  # the next window's context: the network's own output
            gain = self._window_inputs([scores[playing[row]] for row in active], index, "gain")  # [active, 256]
            if gain is not None:
                features = apply_gain(features, gain)
            out = features.float().cpu().numpy()
            estimated = {  # position in `active` -> (song, NoteReach) of the rows the partials model is mixed into
                position: reaches[playing[row]] for position, row in enumerate(active) if playing[row] in reaches
            }
            if refiner is not None and partials is not None and estimated:
                out = self._refine(refiner, partials, mix, index, out, estimated)
            for position, row in enumerate(active):
                number = playing[row]
                score, part = scores[number], out[position]
                if partials is not None and refiner is None and position in estimated:
                    song, reach = estimated[position]
                    part = mix_log_mel(
                        part, partials.magnitude(song, index, reach), mix_shares(song, index, mix, reach)
                    )
                done += 1
                if on_window is not None:
                    on_window(done, total)
                yield number, part[: max(0, score.frames - index * WINDOW_FRAMES)], index == len(score.windows) - 1

    def _sample_window(
        self,
        network: SpectrogramDiffusion,
        sampling: samplers.SamplingDefaults,
        opts: RenderOptions,
        tokens: torch.Tensor,
        index: int,
        cue: torch.Tensor | None,
        context: torch.Tensor,
        generators: list[torch.Generator],
        modulations: dict[float, list],
    ) -> torch.Tensor:
        """Window `index` of some songs, from their tokens [songs, length], frame cues [songs, 256, cue_dims] (models
        with a note roll) and previous windows `context` [songs, 256, 128] (network range): x [songs, 256, 128],
        network range."""
        half = AUTOCAST_DTYPES[self.precision(opts)]
        has_context = torch.full((tokens.shape[0],), index > 0, device=self.device)
        with torch.autocast(self.device.type, dtype=half, enabled=half is not None):
            cache = network.encode(tokens, context, has_context, cue)
            denoise = self._denoiser(network, cache, sampling.guidance, modulations)
            return samplers.sample(
                sampling.sampler,
                lambda z, t: denoise(z, t).float(),
                (tokens.shape[0], WINDOW_FRAMES, N_MELS),
                sampling.steps,
                generators,
                self.device,
            )

    def _refine(
        self,
        refiner: Refiner,
        partials: Partials,
        mix: float,
        index: int,
        network: np.ndarray,
        songs: dict[int, tuple[Song, NoteReach]],
    ) -> np.ndarray:
        """`network` [rows, 256, 128] log-mel of window `index`, with the rows of `songs` (row -> its song and
        NoteReach) mixed with `partials` at share `mix` and refined, in one batch."""
        rows = sorted(songs)
        inputs = []  # per row: magnitude [256, 128], shares [256, 1], onset shares [256, 1], rests [256, 1]
        for row in rows:
            song, reach = songs[row]
            onsets = onset_shares(song, index, reach)
            rests = rest_frames(song, index, reach)[:, None]
            inputs.append((partials.magnitude(song, index, reach), shares_at(onsets, mix), onsets[:, None], rests))
        stacked = [torch.from_numpy(np.stack(arrays)).to(self.device) for arrays in zip(*inputs, strict=True)]
        out = network.copy()
        out[rows] = refiner(torch.from_numpy(network[rows]).to(self.device), *stacked).cpu().numpy()
        return out

    def _window_inputs(self, scores: list[_Score], index: int, kind: str) -> torch.Tensor | None:
        """Window `index`'s `kind` ("cue" or "gain") of `scores`, stacked, or None if the model takes none."""
        if not (self.model.cfg.cue_dims if kind == "cue" else self.model.cfg.velocity_gain):
            return None
        rows = [_window_input(score.note_inputs, index, kind) for score in scores]
        return torch.from_numpy(np.stack(rows)).to(self.device)

    # -- spectrograms --------------------------------------------------------------------------------------------------
    def spectrogram_songs(
        self,
        songs: list[Song],
        options: RenderOptions | None = None,
        on_window: Callable[[int, int], None] | None = None,
    ) -> Iterator[tuple[int, Iterator[np.ndarray]]]:
        """The songs' spectrograms, generated together (see `_generate`): yields (song index, its parts [frames,
        128] log-mel, trimmed to the song's length and release tail), songs without notes first. A lone song's parts
        are generated as they are read, window by window (read them before asking for the next song); in a batch, a
        song is yielded when its last window is generated."""
        parts = self._generate([self._score(song) for song in songs], options, on_window)
        if len(songs) == 1:
            yield 0, (part for _, part, _ in parts)
            return
        kept: dict[int, list[np.ndarray]] = {}
        for number, part, last in parts:
            kept.setdefault(number, []).append(part)
            if last:
                yield number, iter(kept.pop(number))

    def spectrogram_windows(
        self,
        windows: list[list[int]],
        options: RenderOptions | None = None,
        on_window: Callable[[int, int], None] | None = None,
        note_inputs: NoteInputs | None = None,
    ) -> Iterator[np.ndarray]:
        """The network's windows [256, 128] for token `windows` (one song's, in order, each conditioned on the one
        before, and on the song's `note_inputs` for a model that takes them), without the partials model."""
        score = _Score(windows, len(windows) * WINDOW_FRAMES, note_inputs)
        for _, features, _ in self._generate([score], options, on_window):
            yield features

    # -- audio -------------------------------------------------------------------------------------------------------
    def stream(
        self,
        song: Song,
        options: RenderOptions | None = None,
        on_window: Callable[[int, int], None] | None = None,
        mel_sink: Callable[[np.ndarray], None] | None = None,
    ) -> Iterator[np.ndarray]:
        """Audio chunks (float32, 16 kHz) of a song, one window at a time; total = `num_samples(song)`. `mel_sink`
        receives each part of its spectrogram [frames, 128] (see `vocode`)."""
        ((_, parts),) = self.spectrogram_songs([song], options, on_window)
        yield from self.vocode(song, parts, mel_sink)

    def vocode(
        self, song: Song, features: Iterable[np.ndarray], mel_sink: Callable[[np.ndarray], None] | None = None
    ) -> Iterator[np.ndarray]:
        """Audio chunks (float32, 16 kHz) of a song's spectrogram, given as consecutive parts [frames, 128] from its
        first frame: the vocoder's output muted where the score is silent and its pre-echo before onsets taken out
        (`midisynth.render.silence`). `mel_sink` receives each part as it is vocoded."""
        chunks = self.vocoder.stream(features if mel_sink is None else _passed_to(mel_sink, features))
        yield from silence_stream(song, chunks, self.num_samples(song))

    def tokenize(self, song: Song) -> list[list[int]]:
        """The song's token windows (see `midisynth.score.tokens`)."""
        return tokenize(song)

    def note_inputs(self, song: Song) -> NoteInputs | None:
        """The song's per-frame note inputs for this model (see `midisynth.model.note_inputs`); None for one that takes none."""
        return song_note_inputs(song, num_windows(song.duration), self.model.cfg)

    def notices(self, song: Song) -> list[str]:
        """What a render of `song` leaves out or plays otherwise than the file means, one line each: notes the file
        never released (the reference drops them too), a type-2 file's patterns played together (as the reference
        plays them), and events past the model's token limit in a crowded window (with the time range cut)."""
        lines = []
        if song.unreleased:
            lines.append(
                f"{song.unreleased} note{'s' * (song.unreleased != 1)} never released (a note-on without "
                "a note-off) left out, as the reference tokenizer leaves them out"
            )
        if song.together_patterns:
            lines.append(type2_notice(song.together_patterns))
        limit = self.model.cfg.max_tokens
        for index, window in enumerate(self.tokenize(song)):
            cut = cut_seconds(window, limit)
            if cut is not None:
                start = index * WINDOW_SECONDS
                end = min(start + WINDOW_SECONDS, song.duration)
                lines.append(
                    f"notes from {start + cut:.2f} s to {end:.2f} s left out: that {WINDOW_SECONDS} s window "
                    f"has {len(window)} tokens, over the model's {limit}"
                )
        return lines

    def num_samples(self, song: Song) -> int:
        """Length in samples of `stream(song)`'s output."""
        return song_frames(song, num_windows(song.duration)) * HOP_LENGTH

    def render(self, midi: str | Path | bytes | Song, options: RenderOptions | None = None) -> np.ndarray:
        """Render a whole song to float32 audio [samples] at 16 kHz (in memory; use `stream` for long songs)."""
        song = midi if isinstance(midi, Song) else read_midi(midi)
        for notice in self.notices(song):
            log.warning("midisynth: %s: %s", "song" if isinstance(midi, Song | bytes) else midi, notice)
        chunks = list(self.stream(song, options))
        return np.concatenate(chunks) if chunks else np.zeros(0, np.float32)

    def with_options(self, **changes) -> Synthesizer:
        options = replace(self.requested, **changes)
        synth = Synthesizer(self.model, self.vocoder, self.device, options, self.sampling, self.partials, self.refiner)
        synth._networks = self._networks  # share the low-precision copies
        return synth


def checkpoint_vocoder(checkpoint: Checkpoint, device: torch.device) -> Vocoder:
    """The vocoder shipped with a checkpoint (one the bundled model's manifest lists, or the official
    `melgan/model.onnx`), else Griffin-Lim. An ONNX vocoder without onnxruntime installed falls back to Griffin-Lim
    with a one-line notice."""
    if checkpoint.vocoder_path is None:
        return load_vocoder(FALLBACK_VOCODER, device)
    try:
        return load_vocoder(str(checkpoint.vocoder_path), device)
    except ImportError as err:
        log.warning(
            "midisynth: note: %s/%s not used (%s); vocoding with %s",
            checkpoint.vocoder_path.parent.name,
            checkpoint.vocoder_path.name,
            err,
            FALLBACK_VOCODER,
        )
        return load_vocoder(FALLBACK_VOCODER, device)


@dataclass(frozen=True)
class _Score:
    """What the render loop needs of one song."""

    windows: list[list[int]]  # token windows
    frames: int  # frames kept: the song's length and release tail (`song_frames`)
    note_inputs: NoteInputs | None = None  # for a model that takes them
    song: Song | None = (
        None  # its partials estimate is mixed in, and without notes it is silence; None: the network alone
    )


def _window_input(inputs: NoteInputs | None, index: int, kind: str) -> np.ndarray:
    """Window `index`'s `kind` ("cue" [256, cue_dims] or "gain" [256]) of a song's note inputs."""
    row = None
    if inputs is not None:
        row = inputs.cue(index) if kind == "cue" else None if inputs.gain is None else inputs.gain[index]
    if row is None:
        raise ValueError(
            "this model takes per-frame note inputs: pass each song's note_inputs (Synthesizer.note_inputs)"
        )
    return row


def _silence(frames: int, windows: int) -> Iterator[np.ndarray]:
    """Floor-level features (silence) for a song without notes: its `windows` windows, cut to `frames` frames."""
    for index in range(windows):
        yield np.full((min(WINDOW_FRAMES, frames - index * WINDOW_FRAMES), N_MELS), MIN_LOG_MEL, dtype=np.float32)


def _passed_to(sink: Callable[[np.ndarray], None], parts: Iterable[np.ndarray]) -> Iterator[np.ndarray]:
    """`parts`, each given to `sink` as it passes."""
    for part in parts:
        sink(part)
        yield part
