"""Samplers: diffusers' DDPM loop step for step, the original paper formulas, exactness, order of accuracy."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from midisynth.model.noise_schedule import alpha_sigma, eps_from_v, logsnr_schedule, q_sample, v_target
from midisynth.model.samplers import SAMPLERS, sample

SHAPE = (2, 8, 4)  # [batch, frames, bins], small stand-in for [batch, 256, 128]

# google/music-spectrogram-diffusion, scheduler/scheduler_config.json on the Hugging Face hub (the published
# checkpoint's scheduler, written by diffusers 0.14.0.dev0).
HUB_SCHEDULER_CONFIG = {
    "beta_end": 0.02,
    "beta_schedule": "squaredcos_cap_v2",
    "beta_start": 0.0001,
    "clip_sample": True,
    "clip_sample_range": 1.0,
    "num_train_timesteps": 1000,
    "prediction_type": "epsilon",
    "trained_betas": None,
    "variance_type": "fixed_large",
}


def fake_denoiser(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """A fixed nonlinear function of x and t standing in for a network."""
    return torch.tanh(0.7 * x + 0.3 * torch.sin(3 * t)[:, None, None]) * 0.9


def recording(seen: list[float]):
    def denoise(x, t):
        assert t.shape == (x.shape[0],) and t.dtype == torch.float32
        seen.append(float(t[0]))
        return fake_denoiser(x, t)

    return denoise


# -- ddpm: diffusers parity ----------------------------------------------------------------------------------
def test_hub_scheduler_is_the_conversion_scripts():
    diffusers = pytest.importorskip("diffusers", reason="scheduler config check needs diffusers==0.35.2")
    hub = diffusers.DDPMScheduler.from_config(HUB_SCHEDULER_CONFIG).config
    converted = diffusers.DDPMScheduler(beta_schedule="squaredcos_cap_v2", variance_type="fixed_large").config
    public = {k: v for k, v in hub.items() if not k.startswith("_")}
    assert public == {k: v for k, v in converted.items() if not k.startswith("_")}
    assert (hub.timestep_spacing, hub.steps_offset, hub.thresholding, hub.rescale_betas_zero_snr) == (
        "leading",
        0,
        False,
        False,
    )


@pytest.mark.parametrize("steps", [7, 10, 100])
def test_ddpm_matches_diffusers_pipeline_loop(steps):
    diffusers = pytest.importorskip("diffusers", reason="ddpm parity needs diffusers==0.35.2")
    scheduler = diffusers.DDPMScheduler.from_config(HUB_SCHEDULER_CONFIG)
    scheduler.set_timesteps(steps)
    generator = torch.Generator().manual_seed(4)
    x = diffusers.utils.torch_utils.randn_tensor(
        SHAPE, generator=generator, device=torch.device("cpu"), dtype=torch.float32
    )
    reference_times = []
    for t in scheduler.timesteps:  # as SpectrogramDiffusionPipeline.__call__
        noise_time = t / scheduler.config.num_train_timesteps
        reference_times.append(float(noise_time))
        eps = fake_denoiser(x, noise_time.expand(SHAPE[0]))
        x = scheduler.step(eps, t, x, generator=generator).prev_sample
    seen: list[float] = []
    ours = sample("ddpm", recording(seen), SHAPE, steps, torch.Generator().manual_seed(4))
    assert seen == reference_times
    assert (ours - x).abs().max() <= 1e-5


# -- the paper's sampler: the original formulas --------------------------------------------------------------
def test_logsnr_schedule_endpoints_and_scales():
    ends = logsnr_schedule(torch.tensor([0.0, 1.0], dtype=torch.float64))
    assert ends.tolist() == pytest.approx([20.0, -20.0], abs=1e-9)
    grid = logsnr_schedule(torch.linspace(0, 1, 101))  # float32, as in training
    assert grid[0] == 20.0 and grid[-1] == -20.0 and (grid.diff() < 0).all()
    alpha, sigma = alpha_sigma(torch.linspace(-20, 20, 9))
    assert torch.allclose(alpha**2, torch.sigmoid(torch.linspace(-20, 20, 9)))
    assert torch.allclose(alpha**2 + sigma**2, torch.ones(9))
    x0, eps = torch.full((2, 3), 0.5), torch.full((2, 3), -2.0)
    t = torch.tensor([0.0, 0.5])
    expected = [0.5 / math.sqrt(1 + math.exp(-v)) - 2.0 / math.sqrt(1 + math.exp(v)) for v in (20.0, 0.0)]
    assert q_sample(x0, eps, t)[:, 0].tolist() == pytest.approx(expected, abs=1e-6)


def test_v_parameterisation_round_trips():
    """v = alpha eps - sigma x0 and eps = sigma z + alpha v, per row; at t = 1 v is -x0 (up to 5e-5)."""
    gen = torch.Generator().manual_seed(0)
    x0, eps = torch.rand((3, 4, 5), generator=gen) * 2 - 1, torch.randn((3, 4, 5), generator=gen)
    t = torch.tensor([0.05, 0.5, 1.0])
    v = v_target(x0, eps, t)
    assert torch.allclose(eps_from_v(q_sample(x0, eps, t), v, t), eps, atol=1e-5)
    assert torch.allclose(v[2], -x0[2], atol=1e-4)
    alpha, sigma = alpha_sigma(logsnr_schedule(torch.tensor(0.5)))
    assert torch.allclose(v[1], alpha * eps[1] - sigma * x0[1])


def paper_reference(eps_fn, z: np.ndarray, noises: list[np.ndarray], steps: int) -> np.ndarray:
    """diffusion_utils.eval_step / ddpm_step / diffusion_reverse("large") in float64, given the noise."""
    b = np.arctan(np.exp(-0.5 * 20.0))
    a = np.arctan(np.exp(-0.5 * -20.0)) - b

    def logsnr(t):
        return -2.0 * np.log(np.tan(a * t + b))

    def sigmoid(v):
        return 1 / (1 + np.exp(-v))

    for k, i in enumerate(range(steps - 1, -1, -1)):
        t, s = (i + 1.0) / steps, i / steps
        logsnr_t, logsnr_s = logsnr(t), logsnr(s)
        eps = eps_fn(z, t)
        x0 = np.sqrt(1.0 + np.exp(-logsnr_t)) * (z - eps / np.sqrt(1.0 + np.exp(logsnr_t)))
        x0 = np.clip(x0, -1.0, 1.0)  # clip_x0
        if i == 0:
            return x0
        alpha_st = np.sqrt((1.0 + np.exp(-logsnr_t)) / (1.0 + np.exp(-logsnr_s)))
        r = np.exp(logsnr_t - logsnr_s)
        one_minus_r = -np.expm1(logsnr_t - logsnr_s)
        mean = r * alpha_st * z + one_minus_r * np.sqrt(sigmoid(logsnr_s)) * x0
        z = mean + np.sqrt(one_minus_r * sigmoid(-logsnr_t)) * noises[k]
    raise AssertionError("unreachable")


@pytest.mark.parametrize("steps", [1, 6])
def test_paper_sampler_matches_original_formulas(steps):
    generator = torch.Generator().manual_seed(9)
    draws = [torch.randn(SHAPE, generator=generator).double().numpy() for _ in range(steps)]

    def eps_np(z, t):
        return fake_denoiser(torch.from_numpy(z).float(), torch.full((SHAPE[0],), t)).double().numpy()

    expected = paper_reference(eps_np, draws[0], draws[1:], steps)
    seen: list[float] = []
    ours = sample("paper", recording(seen), SHAPE, steps, torch.Generator().manual_seed(9))
    assert seen == pytest.approx([(i + 1) / steps for i in range(steps - 1, -1, -1)])
    assert np.abs(ours.numpy() - expected).max() < 1e-5


# -- exactness and convergence on data with a known denoiser -------------------------------------------------
def cosine_alphas_cumprod() -> np.ndarray:
    """diffusers' squaredcos_cap_v2 alpha-bar for 1000 steps, in float64."""
    grid = np.arange(1001) / 1000
    alpha_bar = np.cos((grid + 0.008) / 1.008 * np.pi / 2) ** 2
    return np.cumprod(1 - np.minimum(1 - alpha_bar[1:] / alpha_bar[:-1], 0.999))


@pytest.mark.parametrize(
    "name, steps, tol", [("ddim", 8, 1e-4), ("dpmpp", 8, 1e-4), ("paper", 20, 1e-4), ("ddpm", 20, 1e-4)]
)
def test_point_mass_is_recovered(name, steps, tol):
    """With the ideal denoiser for data = x0*, every sampler must return x0*."""
    target = torch.linspace(-0.9, 0.9, 64).reshape(SHAPE)
    discrete = torch.from_numpy(cosine_alphas_cumprod())

    def oracle(x, t):
        if name == "ddpm":  # diffusers' discrete schedule
            alpha_bar = discrete[(t * 1000).round().long()].reshape(-1, 1, 1)
            alpha, sigma = alpha_bar.sqrt(), (1 - alpha_bar).sqrt()
        else:
            alpha, sigma = (v.reshape(-1, 1, 1) for v in alpha_sigma(logsnr_schedule(t.double())))
        return ((x - alpha * target) / sigma).float()

    out = sample(name, oracle, SHAPE, steps, torch.Generator().manual_seed(1))
    assert (out - target).abs().max() < tol


def test_dpmpp_is_second_order_and_ddim_first_order():
    """Gaussian data N(mu, s²) per element: the probability-flow ODE keeps the standardised
    (z - alpha mu) / sqrt(alpha² s² + sigma²) fixed, so the exact x0 prediction at the last grid time t = 1/N
    has a closed form."""
    mu, s = 0.1, 0.2  # x0 stays inside [-1, 1], so clipping plays no part

    def posterior_mean(z, t):  # E[x0 | z_t]
        alpha, sigma = (v.reshape(-1, 1, 1) for v in alpha_sigma(logsnr_schedule(t.double())))
        return mu + alpha * s**2 * (z.double() - alpha * mu) / (alpha**2 * s**2 + sigma**2)

    def oracle(z, t):
        alpha, sigma = (v.reshape(-1, 1, 1) for v in alpha_sigma(logsnr_schedule(t.double())))
        return ((z.double() - alpha * posterior_mean(z, t)) / sigma).float()

    def error(name, steps):
        z_1 = torch.randn(SHAPE, generator=torch.Generator().manual_seed(0)).double()
        alpha_1, sigma_1 = alpha_sigma(logsnr_schedule(torch.tensor(1.0, dtype=torch.float64)))
        u = (z_1 - alpha_1 * mu) / torch.sqrt(alpha_1**2 * s**2 + sigma_1**2)
        t = torch.tensor([1 / steps], dtype=torch.float64)
        alpha, sigma = alpha_sigma(logsnr_schedule(t))
        exact = posterior_mean(alpha * mu + torch.sqrt(alpha**2 * s**2 + sigma**2) * u, t)
        out = sample(name, oracle, SHAPE, steps, torch.Generator().manual_seed(0))
        return float((out - exact).abs().max())

    ddim = [error("ddim", n) for n in (400, 800)]
    dpmpp = [error("dpmpp", n) for n in (400, 800)]
    assert 1.8 < ddim[0] / ddim[1] < 2.2  # halving the step halves the error ...
    assert dpmpp[0] / dpmpp[1] > 2.9  # ... or nearly quarters it (4 in the limit)
    assert dpmpp[1] < ddim[1] / 5
    assert error("dpmpp", 10) < error("ddim", 10) / 2


# -- noise contract and determinism --------------------------------------------------------------------------
@pytest.mark.parametrize("name, draws", [("ddpm", 5), ("paper", 5), ("ddim", 1), ("dpmpp", 1)])
def test_draws_initial_noise_then_one_per_step_but_the_last(name, draws):
    generator = torch.Generator().manual_seed(5)
    sample(name, fake_denoiser, SHAPE, 5, generator)
    replay = torch.Generator().manual_seed(5)
    for _ in range(draws):
        torch.randn(SHAPE, generator=replay, dtype=torch.float32)
    assert torch.equal(generator.get_state(), replay.get_state())


@pytest.mark.parametrize("name", list(SAMPLERS))
def test_determinism_seeds_and_per_row_generators(name):
    a = sample(name, fake_denoiser, SHAPE, 5, torch.Generator().manual_seed(2))
    b = sample(name, fake_denoiser, SHAPE, 5, torch.Generator().manual_seed(2))
    c = sample(name, fake_denoiser, SHAPE, 5, torch.Generator().manual_seed(3))
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)
    rows = sample(name, fake_denoiser, SHAPE, 5, [torch.Generator().manual_seed(k) for k in (2, 3)])
    alone = [sample(name, fake_denoiser, (1, *SHAPE[1:]), 5, torch.Generator().manual_seed(k)) for k in (2, 3)]
    assert torch.allclose(rows, torch.cat(alone), atol=1e-6)


def test_callback_reports_every_step():
    calls = []
    sample("dpmpp", fake_denoiser, SHAPE, 4, torch.Generator(), callback=lambda *args: calls.append(args))
    assert calls == [(1, 4), (2, 4), (3, 4), (4, 4)]


def test_bad_arguments():
    with pytest.raises(ValueError, match="unknown sampler"):
        sample("euler", fake_denoiser, SHAPE, 5, torch.Generator())
    with pytest.raises(ValueError, match="at least 1"):
        sample("ddim", fake_denoiser, SHAPE, 0, torch.Generator())
    with pytest.raises(ValueError, match="at most 1000"):
        sample("ddpm", fake_denoiser, SHAPE, 1001, torch.Generator())
    with pytest.raises(ValueError, match="2 generators for a batch of 1"):
        sample("ddim", fake_denoiser, (1, 8, 4), 5, [torch.Generator(), torch.Generator()])
