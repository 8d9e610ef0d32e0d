"""Diffusion samplers over a denoiser `eps = denoise(x, t)`.

x is [batch, 256, 128] in network range ([-1, 1] features), t is [batch] continuous noise time in [0, 1] (the
decoder scales it by its own maximum noise time). Classifier-free guidance is composed outside: the denoiser
passed in may already return the guided ε, and every sampler re-derives x0 from that ε before clipping it.

Noise: every draw is `torch.randn(shape, generator=..., dtype=float32)` on the CPU, then moved to the device
and dtype, so a seed gives the same noise on every device. The first draw is the initial x_T, then one
per step.

Samplers
- "ddpm": diffusers' SpectrogramDiffusionPipeline loop, reproduced bit for bit (its parity contract). Verified
  configuration of the hub checkpoint: `scripts/convert_music_spectrogram_to_diffusers.py`
  (huggingface/diffusers) builds `DDPMScheduler(beta_schedule="squaredcos_cap_v2",
  variance_type="fixed_large")` and leaves everything else at the defaults; the published
  `google/music-spectrogram-diffusion/scheduler/scheduler_config.json` (written by diffusers 0.14.0.dev0) says
  the same: 1000 training steps, "squaredcos_cap_v2" betas (capped at 0.999), "epsilon" prediction,
  clip_sample true with range 1.0, "fixed_large" variance. It has no timestep_spacing or steps_offset keys, so
  diffusers fills in "leading" and 0: timesteps are k * (1000 // steps) for k = steps-1 .. 0. The pipeline
  draws x_T with the generator, calls the decoder with noise time t / 1000, and `DDPMScheduler.step` draws
  noise from the same generator on every step except the last (t == 0). (The converter's gin override
  `eval_condition_weight = 2.0` only configures the JAX model it reads sizes from; the converted pipeline has
  no guidance.)
- "paper": the original ancestral sampler (magenta/music-spectrogram-diffusion,
  `music_spectrogram_diffusion/models/diffusion/diffusion_utils.py`, with
  `gin/models/diffusion/context/t5_base.gin`: cosine schedule, 1000 steps, clip_x0, logvar "large"). Followed:
  `eval_scan` (x_T first, steps scanned for i = N-1 .. 0); `eval_step.body` (t = (i + 1) / N, s = i / N, the
  model sees the continuous t, x0 from ε, clip to [-1, 1], ε re-derived from the clipped x0); `ddpm_step`
  (returns the clipped x0 when i == 0, else mean + std·noise) with `diffusion_reverse`'s "large" branch
  (mean = r·alpha_st·z_t + (1 - r)·alpha_s·x0 with r = SNR(t)/SNR(s), var = (1 - r)·sigmoid(-logSNR_t));
  `get_logsnr_t`'s cosine branch for the schedule. Only the random numbers differ (torch's generator instead
  of JAX's `fold_in`); the noise of the last step, which the original draws and discards, is not drawn.
- "ddim": deterministic DDIM (eta = 0) on the same grid, the original `ddim_step`:
  z_s = alpha_s·x0 + sigma_s·ε.
- "dpmpp": DPM-Solver++(2M) (Lu et al. 2022, data prediction, multistep) on the same grid in
  lambda = logSNR / 2: first order on the first step, second order after; the last step returns the clipped x0
  like the others.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from midisynth.model.noise_schedule import alpha_sigma, logsnr_schedule

Denoiser = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (x [B, 256, 128], t [B] in [0, 1]) -> eps
Callback = Callable[[int, int], None]  # (steps done, total steps)
Generators = torch.Generator | list[torch.Generator]  # one for the batch, or one per batch row


# -- x0 and ε from each other on the schedule (midisynth.model.noise_schedule) -------------------------------
def _x0_from_eps(z: torch.Tensor, eps: torch.Tensor, logsnr: torch.Tensor) -> torch.Tensor:
    alpha, sigma = alpha_sigma(logsnr)
    return (z - sigma * eps) / alpha


def _eps_from_x0(z: torch.Tensor, x0: torch.Tensor, logsnr: torch.Tensor) -> torch.Tensor:
    alpha, sigma = alpha_sigma(logsnr)
    return (z - alpha * x0) / sigma


def _noise(shape: tuple, generator: Generators, device, dtype) -> torch.Tensor:
    """Standard normal noise drawn on the CPU; a list of generators draws each batch row from its own."""
    if isinstance(generator, torch.Generator):
        noise = torch.randn(shape, generator=generator, dtype=torch.float32)
    else:
        if len(generator) != shape[0]:
            raise ValueError(f"{len(generator)} generators for a batch of {shape[0]}")
        noise = torch.cat([torch.randn((1, *shape[1:]), generator=g, dtype=torch.float32) for g in generator])
    return noise.to(device=device, dtype=dtype)


# -- samplers on the continuous schedule ---------------------------------------------------------------------
StepFn = Callable[..., torch.Tensor]  # (z_t, x0, eps, logsnr_t, logsnr_s, noise) -> z_s


def _logsnr_at(t: float) -> torch.Tensor:
    return logsnr_schedule(torch.tensor(t, dtype=torch.float64)).to(torch.float32)


def _predict(denoise: Denoiser, z: torch.Tensor, t: float, dtype) -> tuple[torch.Tensor, ...]:
    """Clipped x0, ε re-derived from it, and logSNR at continuous time t (the original eval_step)."""
    time = torch.full((z.shape[0],), t, device=z.device, dtype=torch.float32)  # [batch]
    logsnr = _logsnr_at(t)
    eps = denoise(z.to(dtype), time).float()
    x0 = _x0_from_eps(z, eps, logsnr).clamp(-1.0, 1.0)
    return x0, _eps_from_x0(z, x0, logsnr), logsnr


def _ancestral_step(z, x0, eps, logsnr_t, logsnr_s, noise) -> torch.Tensor:
    """The original `ddpm_step` with `diffusion_reverse`'s "large" variance."""
    alpha_st = torch.sqrt((1 + torch.exp(-logsnr_t)) / (1 + torch.exp(-logsnr_s)))
    alpha_s = torch.sigmoid(logsnr_s).sqrt()
    r = torch.exp(logsnr_t - logsnr_s)  # SNR(t) / SNR(s)
    one_minus_r = -torch.expm1(logsnr_t - logsnr_s)
    mean = r * alpha_st * z + one_minus_r * alpha_s * x0
    return mean + torch.sqrt(one_minus_r * torch.sigmoid(-logsnr_t)) * noise()


def _ddim_step(z, x0, eps, logsnr_t, logsnr_s, noise) -> torch.Tensor:
    """The original `ddim_step`: z_s = alpha_s x0 + sigma_s eps."""
    alpha_s, sigma_s = alpha_sigma(logsnr_s)
    return alpha_s * x0 + sigma_s * eps


def _dpmpp_stepper() -> StepFn:
    """DPM-Solver++(2M) in lambda = logSNR / 2: first order on the first step, second order after."""
    previous: dict[str, torch.Tensor] = {}

    def step(z, x0, eps, logsnr_t, logsnr_s, noise) -> torch.Tensor:
        h = (logsnr_s - logsnr_t) / 2
        alpha_s, sigma_s = alpha_sigma(logsnr_s)
        _, sigma_t = alpha_sigma(logsnr_t)
        if previous:  # D = x0 + (x0 - x0_prev) / (2 r), r = h_prev / h
            half_ratio = h / (2 * previous["h"])
            d = (1 + half_ratio) * x0 - half_ratio * previous["x0"]
        else:
            d = x0
        previous.update(x0=x0, h=h)
        return (sigma_s / sigma_t) * z - alpha_s * torch.expm1(-h) * d

    return step


def _continuous(make_step: Callable[[], StepFn]):
    """N uniform steps from t = (i + 1) / N to s = i / N; the model sees t; the last step returns x0."""

    def run(denoise: Denoiser, shape, steps, generator, device, dtype, callback) -> torch.Tensor:
        step = make_step()
        z = _noise(shape, generator, device, torch.float32)  # [batch, 256, 128] x_T, state kept in float32
        for done, i in enumerate(range(steps - 1, -1, -1), start=1):
            x0, eps, logsnr_t = _predict(denoise, z, (i + 1) / steps, dtype)
            if i == 0:
                z = x0
            else:
                z = step(
                    z, x0, eps, logsnr_t, _logsnr_at(i / steps), lambda: _noise(shape, generator, device, torch.float32)
                )
            if callback is not None:
                callback(done, steps)
        return z

    return run


# -- diffusers' discrete DDPM --------------------------------------------------------------------------------
class _DiffusersDDPM:
    """DDPMScheduler(squaredcos_cap_v2, fixed_large, clip_sample, leading) arithmetic, in float32."""

    num_train_timesteps = 1000

    def __init__(self) -> None:
        def alpha_bar(t: float) -> float:
            return math.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2

        n = self.num_train_timesteps
        betas = [min(1 - alpha_bar((i + 1) / n) / alpha_bar(i / n), 0.999) for i in range(n)]
        self.alphas_cumprod = torch.cumprod(1.0 - torch.tensor(betas, dtype=torch.float32), dim=0)  # [1000]

    def timesteps(self, steps: int) -> list[int]:
        """Timesteps with "leading" spacing and steps_offset 0: k * (1000 // steps) for k = steps-1 .. 0."""
        ratio = self.num_train_timesteps // steps
        return [i * ratio for i in range(steps - 1, -1, -1)]

    def step(
        self, eps: torch.Tensor, t: int, prev_t: int, z: torch.Tensor, noise: Callable[[], torch.Tensor]
    ) -> torch.Tensor:
        """z at prev_t from z at t: mean around the clipped x0, plus sqrt(beta)·noise unless t == 0."""
        a_t = self.alphas_cumprod[t]
        a_prev = self.alphas_cumprod[prev_t] if prev_t >= 0 else torch.tensor(1.0)
        beta_t, beta_prev = 1 - a_t, 1 - a_prev
        current_alpha = a_t / a_prev
        current_beta = 1 - current_alpha
        x0 = ((z - beta_t**0.5 * eps) / a_t**0.5).clamp(-1.0, 1.0)
        mean = (a_prev**0.5 * current_beta) / beta_t * x0 + current_alpha**0.5 * beta_prev / beta_t * z
        if t > 0:
            mean = mean + current_beta**0.5 * noise()
        return mean


_DDPM = _DiffusersDDPM()


def _ddpm(denoise: Denoiser, shape, steps, generator, device, dtype, callback) -> torch.Tensor:
    z = _noise(shape, generator, device, dtype)  # [batch, 256, 128] x_T
    timesteps = _DDPM.timesteps(steps)
    for done, t in enumerate(timesteps, start=1):
        prev_t = timesteps[done] if done < len(timesteps) else -1
        time = torch.full((shape[0],), t, dtype=torch.long, device=device) / _DDPM.num_train_timesteps
        z = _DDPM.step(denoise(z, time), t, prev_t, z, lambda: _noise(shape, generator, device, dtype))
        if callback is not None:
            callback(done, steps)
    return z


# -- registry ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SamplerInfo:
    run: Callable[..., torch.Tensor]
    default_steps: int
    description: str
    max_steps: int | None = None  # the most steps it can take (ddpm: one per training timestep); None: any number


SAMPLERS: dict[str, SamplerInfo] = {
    "ddpm": SamplerInfo(
        _ddpm, 100, "diffusers' DDPM loop (reproduces its output for a seed)", _DDPM.num_train_timesteps
    ),
    "paper": SamplerInfo(
        _continuous(lambda: _ancestral_step), 1000, "the paper's ancestral sampler, continuous cosine log-SNR"
    ),
    "ddim": SamplerInfo(_continuous(lambda: _ddim_step), 20, "deterministic DDIM"),
    "dpmpp": SamplerInfo(_continuous(_dpmpp_stepper), 20, "DPM-Solver++(2M), good at 10-20 steps"),
}


def check_steps(sampler: str | None, steps: int) -> None:
    """ValueError unless `steps` is at least 1 and at most the most `sampler` takes (None: any sampler's)."""
    if steps < 1:
        raise ValueError(f"steps must be at least 1, got {steps}")
    most = SAMPLERS[sampler].max_steps if sampler in SAMPLERS else None
    if most is not None and steps > most:
        raise ValueError(f"the {sampler} sampler takes at most {most} steps (one per training timestep), got {steps}")


@dataclass(frozen=True)
class SamplingDefaults:
    """The sampling a model is meant to be rendered with (stored with it); render options left unset take these."""

    sampler: str
    steps: int
    guidance: float = 1.0  # classifier-free guidance weight; 1 disables it

    def __post_init__(self) -> None:
        if self.sampler not in SAMPLERS or self.steps < 1 or not 1.0 <= self.guidance < math.inf:
            raise ValueError(f"invalid sampling defaults {self}: a known sampler, steps >= 1, finite guidance >= 1")
        check_steps(self.sampler, self.steps)

    def __str__(self) -> str:
        return f"{self.sampler}, {self.steps} steps, guidance {self.guidance:g}"

    def to_json(self) -> str:
        return json.dumps({"sampler": self.sampler, "steps": self.steps, "guidance": self.guidance})

    @classmethod
    def from_json(cls, text: str) -> SamplingDefaults:
        """Parse `to_json`'s text; ValueError if it is not valid."""
        try:
            fields = json.loads(text)
            return cls(str(fields["sampler"]), int(fields["steps"]), float(fields.get("guidance", 1.0)))
        except (json.JSONDecodeError, KeyError, TypeError, AttributeError) as err:
            raise ValueError(f"invalid sampling defaults {text!r} ({err})") from None


# diffusers' SpectrogramDiffusionPipeline: 100 DDPM steps, no guidance (what the official ε checkpoint is used with;
# ε-models sampled in few steps are far worse, see docs/training.md).
DIFFUSERS_SAMPLING = SamplingDefaults("ddpm", 100, 1.0)
# midisynth's v-prediction models (the bundled model's manifest states the same): DDIM in 3 steps, no guidance,
# chosen by the held-out evaluation (docs/experiments.md): 3 steps score as well as 4 or more (with the partials model
# mixed in, and without), and guidance costs far more log-mel distance than it gains in transcribed notes. A model's
# own stored settings come first.
V_PREDICTION_SAMPLING = SamplingDefaults("ddim", 3, 1.0)


def default_sampling(prediction: str) -> SamplingDefaults:
    """The sampling for a model that states none, by what its decoder predicts ("epsilon" or "v")."""
    return V_PREDICTION_SAMPLING if prediction == "v" else DIFFUSERS_SAMPLING


def sample(
    name: str,
    denoise: Denoiser,
    shape: tuple[int, ...],
    steps: int,
    generator: Generators,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
    callback: Callback | None = None,
) -> torch.Tensor:
    """Draw x0 [shape] (network range) with the named sampler in `steps` denoiser calls.

    `dtype` is the denoiser's input dtype. `generator` may be a list with one generator per batch row: each
    row then gets the noise it would get alone, so batching songs together does not change their audio.
    `callback(done, steps)` runs after every step.
    """
    try:
        info = SAMPLERS[name]
    except KeyError:
        raise ValueError(f"unknown sampler {name!r}; choose from {', '.join(SAMPLERS)}") from None
    check_steps(name, steps)
    return info.run(denoise, shape, steps, generator, torch.device(device), dtype, callback)
