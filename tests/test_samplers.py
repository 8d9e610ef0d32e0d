"""Samplers: diffusers' DDPM scheduler step for step, the paper's formulas, and exactness on a point mass."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from midisynth.samplers import SAMPLERS, alpha_sigma, logsnr_schedule, q_sample, sample

SHAPE = (1, 8, 4)


def fake_denoiser(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """A fixed nonlinear function of x and t standing in for a network."""
    return torch.tanh(0.7 * x + 0.3 * torch.sin(3 * t)[:, None, None]) * 0.9


@pytest.mark.parametrize("steps", [10, 100])
def test_ddpm_matches_diffusers_scheduler(steps):
    diffusers = pytest.importorskip("diffusers", reason="ddpm parity needs diffusers==0.35.2")
    scheduler = diffusers.DDPMScheduler(beta_schedule="squaredcos_cap_v2", variance_type="fixed_large")
    scheduler.set_timesteps(steps)
    generator = torch.Generator().manual_seed(4)
    x = torch.randn(SHAPE, generator=generator)
    reference_times = []
    for t in scheduler.timesteps:
        reference_times.append(float(t / scheduler.config.num_train_timesteps))
        x = scheduler.step(fake_denoiser(x, (t / 1000).reshape(1)), t, x, generator=generator).prev_sample
    seen = []

    def recording(z, t):
        seen.append(float(t[0]))
        return fake_denoiser(z, t)

    ours = sample("ddpm", recording, SHAPE, steps, torch.Generator().manual_seed(4))
    assert seen == pytest.approx(reference_times)
    assert (ours - x).abs().max() <= 1e-5


def test_logsnr_schedule_endpoints_and_scales():
    assert float(logsnr_schedule(torch.tensor(0.0, dtype=torch.float64))) == pytest.approx(20.0, abs=1e-6)
    assert float(logsnr_schedule(torch.tensor(1.0, dtype=torch.float64))) == pytest.approx(-20.0, abs=1e-6)
    alpha, sigma = alpha_sigma(torch.linspace(-20, 20, 9))
    assert torch.allclose(alpha**2 + sigma**2, torch.ones(9))
    x0, eps = torch.ones(2, 3), torch.zeros(2, 3)
    assert torch.allclose(q_sample(x0, eps, torch.tensor([0.0, 1.0]))[:, 0], torch.tensor([1.0, math.sqrt(
        1 / (1 + math.exp(20)))]), atol=1e-6)


def paper_reference(eps_fn, z: np.ndarray, noises: list[np.ndarray], steps: int) -> np.ndarray:
    """The original eval_step / ddpm_step formulas in float64 numpy, with given per-step noise."""
    b = math.atan(math.exp(-10.0))
    a = math.atan(math.exp(10.0)) - b

    def logsnr(t):
        return -2.0 * math.log(math.tan(a * t + b))

    def sig(v):
        return 1 / (1 + math.exp(-v))

    for k, i in enumerate(range(steps - 1, -1, -1)):
        t, s = (i + 1) / steps, i / steps
        lt, ls = logsnr(t), logsnr(s)
        eps = eps_fn(z, t)
        x0 = np.clip(math.sqrt(1 + math.exp(-lt)) * (z - eps / math.sqrt(1 + math.exp(lt))), -1, 1)
        if i == 0:
            return x0
        alpha_st = math.sqrt((1 + math.exp(-lt)) / (1 + math.exp(-ls)))
        r = math.exp(lt - ls)
        one_minus_r = -math.expm1(lt - ls)
        mean = r * alpha_st * z + one_minus_r * math.sqrt(sig(ls)) * x0
        z = mean + math.sqrt(one_minus_r * sig(-lt)) * noises[k]
    return z


def test_paper_sampler_matches_original_formulas():
    steps = 6
    generator = torch.Generator().manual_seed(9)
    draws = [torch.randn(SHAPE, generator=generator).numpy().astype(np.float64) for _ in range(steps)]

    def eps_np(z, t):
        return fake_denoiser(torch.from_numpy(z).float(), torch.tensor([t])).double().numpy()

    expected = paper_reference(eps_np, draws[0], draws[1:], steps)
    ours = sample("paper", fake_denoiser, SHAPE, steps, torch.Generator().manual_seed(9))
    assert np.abs(ours.numpy() - expected).max() < 1e-4


@pytest.mark.parametrize("name, steps, tol", [("ddim", 8, 1e-4), ("dpmpp", 8, 1e-4), ("paper", 50, 1e-4),
                                              ("ddpm", 50, 1e-3)])
def test_point_mass_is_recovered(name, steps, tol):
    """With the ideal denoiser for data = x0*, every sampler must return x0*."""
    target = torch.linspace(-0.9, 0.9, 32).reshape(1, 8, 4)

    def oracle(x, t):
        if name == "ddpm":  # diffusers' discrete schedule
            from midisynth.samplers import _DDPM

            a = _DDPM.alphas_cumprod[(t * 1000).round().long()].reshape(-1, 1, 1)
            return (x - a.sqrt() * target) / (1 - a).sqrt()
        alpha, sigma = alpha_sigma(logsnr_schedule(t.double()).float())
        return (x - alpha.reshape(-1, 1, 1) * target) / sigma.reshape(-1, 1, 1)

    out = sample(name, oracle, SHAPE, steps, torch.Generator().manual_seed(1))
    assert (out - target).abs().max() < tol


def test_determinism_and_seed_dependence():
    for name in SAMPLERS:
        a = sample(name, fake_denoiser, SHAPE, 5, torch.Generator().manual_seed(2))
        b = sample(name, fake_denoiser, SHAPE, 5, torch.Generator().manual_seed(2))
        c = sample(name, fake_denoiser, SHAPE, 5, torch.Generator().manual_seed(3))
        assert torch.equal(a, b)
        assert not torch.equal(a, c)


def test_bad_arguments():
    with pytest.raises(ValueError, match="unknown sampler"):
        sample("euler", fake_denoiser, SHAPE, 5, torch.Generator())
    with pytest.raises(ValueError, match="at least 1"):
        sample("ddim", fake_denoiser, SHAPE, 0, torch.Generator())
    with pytest.raises(ValueError, match="at most 1000"):
        sample("ddpm", fake_denoiser, SHAPE, 1001, torch.Generator())
