"""The three Spectrogram Diffusion networks in plain PyTorch.

- `NotesEncoder`: T5 encoder over a window's event tokens.
- `ContextEncoder`: T5 encoder over the previous window's spectrogram (network range).
- `FilmDecoder`: T5 decoder with FiLM noise-time conditioning; the denoiser of the diffusion process.

T5 conventions throughout: RMS layer norm (no mean, no bias), no biases in linear layers, attention without the
1/sqrt(d) scaling and without relative position bias, gated-GELU feed-forward (tanh approximation), fixed
(non-trainable) position tables. Module names are midisynth's own; `checkpoints.py` maps them to diffusers' names.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import cast

import torch
import torch.nn.functional as F
from torch import nn

from midisynth.model.config import ModelConfig
from midisynth.precision import hardware, native_bf16


def sinusoid_table(positions: int, dim: int, max_scale: float = 10_000.0) -> torch.Tensor:
    """Fixed position table [positions, dim]: sines in the first half, cosines in the second (MT3's layout)."""
    half = dim // 2
    inv_freq = torch.exp(-math.log(max_scale) * torch.arange(half, dtype=torch.float64) / max(half - 1, 1))
    angles = torch.arange(positions, dtype=torch.float64)[:, None] * inv_freq[None, :]
    table = torch.zeros(positions, dim, dtype=torch.float64)
    table[:, :half] = torch.sin(angles)
    table[:, half : 2 * half] = torch.cos(angles)
    return table.float()


def timestep_embedding(noise_time: torch.Tensor, dim: int, max_period: float) -> torch.Tensor:
    """Sinusoidal embedding [batch, dim] of scaled noise times [batch] (sines first, frequency shift 1)."""
    half = dim // 2
    freqs = torch.exp(
        -math.log(max_period) * torch.arange(half, dtype=torch.float32, device=noise_time.device) / (half - 1)
    )
    angles = noise_time.float()[:, None] * freqs[None, :]
    return torch.cat([torch.sin(angles), torch.cos(angles)], dim=-1)


def attention_bias(key_mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Additive bias [batch, 1, 1, keys] from a boolean key mask [batch, keys] (True = attend).

    Masked keys get a large negative value rather than -inf, so a fully masked row attends uniformly (as T5 and
    diffusers do) instead of producing NaN.
    """
    bias = torch.zeros(key_mask.shape, dtype=dtype, device=key_mask.device)
    bias = bias.masked_fill(~key_mask.bool(), torch.finfo(dtype).min / 2)
    return bias[:, None, None, :]


class RMSNorm(nn.Module):
    """T5 layer norm: x / rms(x) * weight, statistics in float32."""

    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        variance = x.float().pow(2).mean(-1, keepdim=True)
        return self.weight * (x * torch.rsqrt(variance + self.eps).to(x.dtype))


UNFUSED_MAX_SCORES = 1 << 20  # queries x keys per head up to which bf16 CPU attention is unfused (see `attend`)


class Attention(nn.Module):
    """Multi-head attention without score scaling and without biases."""

    def __init__(self, d_model: int, num_heads: int, d_kv: int):
        super().__init__()
        self.num_heads = num_heads
        self.d_kv = d_kv
        inner = num_heads * d_kv
        self.q = nn.Linear(d_model, inner, bias=False)
        self.k = nn.Linear(d_model, inner, bias=False)
        self.v = nn.Linear(d_model, inner, bias=False)
        self.o = nn.Linear(inner, d_model, bias=False)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        batch, length, _ = x.shape
        return x.view(batch, length, self.num_heads, self.d_kv).transpose(1, 2)  # [batch, heads, length, d_kv]

    def keys_values(self, source: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Project a key/value source [batch, keys, d_model] once; reusable across calls (cross-attention cache)."""
        return self._heads(self.k(source)), self._heads(self.v(source))

    def forward(
        self,
        x: torch.Tensor,  # [batch, queries, d_model]
        keys_values: tuple[torch.Tensor, torch.Tensor] | None = None,  # default: self-attention
        bias: torch.Tensor | None = None,  # [batch, 1, 1 or queries, keys] additive
    ) -> torch.Tensor:
        q = self._heads(self.q(x))
        k, v = keys_values if keys_values is not None else self.keys_values(x)
        if bias is not None:
            bias = bias.to(q.dtype)
        out = attend(q, k, v, bias)  # [batch, heads, queries, d_kv]
        batch, _, queries, _ = out.shape
        return self.o(out.transpose(1, 2).reshape(batch, queries, self.num_heads * self.d_kv))


def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """softmax(q k^T + bias) v, unscaled: q [batch, heads, queries, d_kv], k and v [batch, heads, keys, d_kv], bias
    additive, broadcast to [batch, heads, queries, keys] (or None).

    In bf16 on a CPU that computes bf16 natively (`precision.native_bf16`), for up to UNFUSED_MAX_SCORES scores per
    head, this is two bf16 matmuls and a softmax: torch's fused attention kernel takes about twice as long for a
    decoder's 256 queries over 256-2304 keys. The scores are rounded to bf16 before the softmax (which computes in
    float32 internally): the output's error against float32 attention is about 0.3 % instead of 0.2 %, below that of
    the bf16 linear layers around it. Larger score matrices (the official model's 2048-token encoder), emulated bf16,
    fp32 and CUDA take the fused kernel, which is faster there."""
    if (
        q.device.type == "cpu"
        and q.dtype == torch.bfloat16
        and q.shape[-2] * k.shape[-2] <= UNFUSED_MAX_SCORES
        and native_bf16(hardware("cpu"))
    ):
        scores = torch.matmul(q, k.transpose(-1, -2))  # [batch, heads, queries, keys]
        if bias is not None:
            scores = scores + bias
        return torch.matmul(torch.softmax(scores, dim=-1), v)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=bias, scale=1.0)


class GatedGelu(nn.Module):
    """T5 v1.1 feed-forward: wo(gelu_tanh(wi_0 x) * wi_1 x)."""

    def __init__(self, d_model: int, d_ff: int, dropout: float):
        super().__init__()
        self.wi_0 = nn.Linear(d_model, d_ff, bias=False)
        self.wi_1 = nn.Linear(d_model, d_ff, bias=False)
        self.wo = nn.Linear(d_ff, d_model, bias=False)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.wo(self.dropout(gated_gelu(self.wi_0(x), self.wi_1(x))))


_GELU_TANH_SCALE = 2.0 * math.sqrt(2.0 / math.pi)


def gated_gelu(x: torch.Tensor, gate: torch.Tensor) -> torch.Tensor:
    """gelu_tanh(x) * gate. Rendering in fp32 on a CPU computes gelu_tanh(x) = x sigmoid(2 sqrt(2 / pi) (x +
    0.044715 x^3)), the same function, in place: torch's CPU tanh kernel is slower than that whole chain
    (docs/cpu_paths.md).
    Training (which needs the graph), CUDA (where one fused kernel wins) and half precisions (each step of the chain
    would round) use F.gelu."""
    if x.requires_grad or gate.requires_grad or x.is_cuda or x.dtype != torch.float32:
        return F.gelu(x, approximate="tanh") * gate
    out = x * x
    out.mul_(0.044715).add_(1.0).mul_(x).mul_(_GELU_TANH_SCALE).sigmoid_()
    return out.mul_(x).mul_(gate)


class FiLM(nn.Module):
    """Feature-wise affine modulation: x * (1 + scale) + shift, with (scale, shift) projected from a conditioning vector
    by `scale_shift`."""

    def __init__(self, cond_dim: int, d_model: int):
        super().__init__()
        self.scale_shift = nn.Linear(cond_dim, 2 * d_model, bias=False)

    def forward(self, x: torch.Tensor, scale_shift: torch.Tensor) -> torch.Tensor:
        """x [batch, length, d_model], scale_shift [batch or 1, 1, 2 * d_model] = self.scale_shift(condition)."""
        scale, shift = scale_shift.chunk(2, dim=-1)
        return x * (1 + scale) + shift


class EncoderBlock(nn.Module):
    """Pre-norm T5 encoder block: self-attention then gated-GELU feed-forward, each residual."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.attn_norm = RMSNorm(cfg.d_model)
        self.attn = Attention(cfg.d_model, cfg.num_heads, cfg.d_kv)
        self.ff_norm = RMSNorm(cfg.d_model)
        self.ff = GatedGelu(cfg.d_model, cfg.d_ff, cfg.dropout_rate)
        self.dropout = nn.Dropout(cfg.dropout_rate)

    def forward(self, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        x = x + self.dropout(self.attn(self.attn_norm(x), bias=bias))
        return x + self.dropout(self.ff(self.ff_norm(x)))


class TransformerEncoder(nn.Module):
    """Stack of encoder blocks with input and output dropout and a final norm (shared by both encoders)."""

    def __init__(self, cfg: ModelConfig, num_layers: int):
        super().__init__()
        self.dropout_in = nn.Dropout(cfg.dropout_rate)
        self.blocks = nn.ModuleList(EncoderBlock(cfg) for _ in range(num_layers))
        self.final_norm = RMSNorm(cfg.d_model)
        self.dropout_out = nn.Dropout(cfg.dropout_rate)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """x [batch, length, d_model] embedded inputs, mask [batch, length] bool -> [batch, length, d_model]."""
        bias = attention_bias(mask, x.dtype)
        x = self.dropout_in(x)
        for block in self.blocks:
            x = block(x, bias)
        return self.dropout_out(self.final_norm(x))


class NotesEncoder(nn.Module):
    """Encodes a window's event tokens [batch, tokens] (PAD = 0 is masked) -> [batch, tokens, d_model]."""

    position_table: torch.Tensor  # [positions, d_model] sinusoids (a buffer)

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.token_embedding = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.register_buffer("position_table", sinusoid_table(cfg.max_tokens, cfg.d_model))
        self.encoder = TransformerEncoder(cfg, cfg.num_notes_layers)

    def forward(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mask = tokens > 0  # [batch, tokens]
        x = self.token_embedding(tokens) + self.position_table[: tokens.shape[1]]
        return self.encoder(x, mask), mask


class ContextEncoder(nn.Module):
    """Encodes the previous window's spectrogram [batch, 256, 128] (network range) -> [batch, 256, d_model]."""

    position_table: torch.Tensor  # [positions, d_model] sinusoids (a buffer)

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.input_proj = nn.Linear(cfg.input_dims, cfg.d_model, bias=False)
        self.register_buffer("position_table", sinusoid_table(cfg.targets_length, cfg.d_model))
        self.encoder = TransformerEncoder(cfg, cfg.num_context_layers)

    def forward(self, context: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        x = self.input_proj(context) + self.position_table[: context.shape[1]]
        return self.encoder(x, mask)


@dataclass
class WindowConditioning:
    """What the decoder is conditioned on for one window, computed once per window (not once per step): per layer,
    the cross-attention keys and values of the concatenated encodings, and the projected note cue.

    They serve the first `keys_values[i][0].shape[0]` rows of the decoder batch; rows past those (the
    unconditional half of a classifier-free-guidance batch) get no cross-attention, which equals attending to
    zeroed encodings as the paper's sampler does.
    """

    keys_values: list[tuple[torch.Tensor, torch.Tensor]]  # per layer: k, v [cond_batch, heads, keys, d_kv]
    bias: torch.Tensor  # [cond_batch, 1, 1, keys]
    note_cue: torch.Tensor | None = None  # [cond_batch, 256, d_model] added to the decoder's inputs (note cue)

    @property
    def batch_size(self) -> int:
        return self.bias.shape[0]


class DecoderBlock(nn.Module):
    """FiLM-conditioned T5 decoder block: self-attention, cross-attention, feed-forward, each pre-norm and residual."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        cond_dim = 4 * cfg.d_model
        self.self_norm = RMSNorm(cfg.d_model)
        self.self_film = FiLM(cond_dim, cfg.d_model)
        self.self_attn = Attention(cfg.d_model, cfg.num_heads, cfg.d_kv)
        self.cross_norm = RMSNorm(cfg.d_model)
        self.cross_attn = Attention(cfg.d_model, cfg.num_heads, cfg.d_kv)
        self.ff_norm = RMSNorm(cfg.d_model)
        self.ff_film = FiLM(cond_dim, cfg.d_model)
        self.ff = GatedGelu(cfg.d_model, cfg.d_ff, cfg.dropout_rate)
        self.dropout = nn.Dropout(cfg.dropout_rate)

    def modulation(self, cond: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The FiLM scales and shifts [batch, 1, 2 * d_model] of self-attention and of the feed-forward for the
        noise-time embedding `cond` [batch, 1, 4 * d_model]."""
        return self.self_film.scale_shift(cond), self.ff_film.scale_shift(cond)

    def forward(
        self,
        y: torch.Tensor,  # [batch, frames, d_model]
        modulation: tuple[torch.Tensor, torch.Tensor],  # `self.modulation(cond)`, each [batch or 1, 1, 2 * d_model]
        keys_values: tuple[torch.Tensor, torch.Tensor] | None,
        bias: torch.Tensor | None,
    ) -> torch.Tensor:
        self_modulation, ff_modulation = modulation
        y = y + self.dropout(self.self_attn(self.self_film(self.self_norm(y), self_modulation)))
        if keys_values is not None:
            n = keys_values[0].shape[0]
            attended = y[:n] + self.dropout(self.cross_attn(self.cross_norm(y[:n]), keys_values, bias))
            y = attended if n == y.shape[0] else torch.cat([attended, y[n:]])
        return y + self.dropout(self.ff(self.ff_film(self.ff_norm(y), ff_modulation)))


class FilmDecoder(nn.Module):
    """Predicts, for a noisy window x_t [batch, 256, 128] at noise time t, what `ModelConfig.prediction` names: the
    noise ε (the paper's objective) or v = α ε − σ x0 (the bundled model's), from the window's conditioning."""

    position_table: torch.Tensor  # [positions, d_model] sinusoids (a buffer)

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        d = cfg.d_model
        self.time_mlp = nn.Sequential(
            nn.Linear(d, 4 * d, bias=False), nn.SiLU(), nn.Linear(4 * d, 4 * d, bias=False), nn.SiLU()
        )
        self.input_proj = nn.Linear(cfg.input_dims, d, bias=False)
        self.cue_proj: nn.Linear | None = None
        if cfg.cue_dims:  # starts at zero: a model fine-tuned to use the cue starts as the one it came from
            self.cue_proj = nn.Linear(cfg.cue_dims, d, bias=False)
            nn.init.zeros_(self.cue_proj.weight)
        self.register_buffer("position_table", sinusoid_table(cfg.targets_length, d))
        self.dropout_in = nn.Dropout(cfg.dropout_rate)
        self.blocks = nn.ModuleList(DecoderBlock(cfg) for _ in range(cfg.num_decoder_layers))
        self.final_norm = RMSNorm(d)
        self.dropout_out = nn.Dropout(cfg.dropout_rate)
        self.output_proj = nn.Linear(d, cfg.input_dims, bias=False)

    def conditioning(
        self,
        encoded: torch.Tensor,  # [batch, keys, d_model] both encodings concatenated
        mask: torch.Tensor,  # [batch, keys] bool
        note_cue: torch.Tensor
        | None = None,  # [batch, 256, cue_dims] frame cue (midisynth.model.note_inputs), iff cue_dims
    ) -> WindowConditioning:
        if self.cue_proj is None and note_cue is not None:
            raise ValueError("this model takes no per-frame note cue (cue_dims = 0)")
        if self.cue_proj is not None and note_cue is None:
            raise ValueError(
                f"this model needs a per-frame note cue ({self.cfg.cue_dims} wide, midisynth.model.note_inputs)"
            )
        return WindowConditioning(
            keys_values=[block.cross_attn.keys_values(encoded) for block in self._blocks()],
            bias=attention_bias(mask, encoded.dtype),
            note_cue=None if note_cue is None or self.cue_proj is None else self.cue_proj(note_cue.to(encoded.dtype)),
        )

    def _blocks(self) -> list[DecoderBlock]:
        return cast(list[DecoderBlock], list(self.blocks))

    def noise_modulation(self, noise_time: torch.Tensor, dtype: torch.dtype) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """All the decoder takes from the noise times `noise_time` [batch] in [0, 1]: per block, its FiLM scales and
        shifts (`DecoderBlock.modulation`). Every window sampled at a given time has the same, so a renderer may
        compute them once per time; `dtype`: the decoder input's."""
        emb = timestep_embedding(
            noise_time * self.cfg.max_decoder_noise_time, self.cfg.d_model, self.cfg.max_decoder_noise_time
        )
        cond = self.time_mlp(emb.to(dtype))[:, None, :]  # [batch, 1, 4 * d_model]
        return [block.modulation(cond) for block in self._blocks()]

    def forward(
        self,
        x: torch.Tensor,  # [batch, frames, 128] noisy spectrogram, network range
        noise_time: torch.Tensor,  # [batch] in [0, 1]
        cache: WindowConditioning | None,  # None: fully unconditional
        modulation: list[tuple[torch.Tensor, torch.Tensor]] | None = None,  # noise_modulation(noise_time), if known
    ) -> torch.Tensor:
        if modulation is None:
            modulation = self.noise_modulation(noise_time, x.dtype)
        y = self.input_proj(x) + self.position_table[: x.shape[1]]
        if cache is not None and cache.note_cue is not None:  # conditioned rows only, like cross-attention
            n = cache.batch_size
            y = torch.cat([y[:n] + cache.note_cue, y[n:]]) if n < y.shape[0] else y + cache.note_cue
        y = self.dropout_in(y)
        for i, block in enumerate(self.blocks):
            kv = cache.keys_values[i] if cache is not None else None
            y = block(y, modulation[i], kv, cache.bias if cache is not None else None)
        return self.output_proj(self.dropout_out(self.final_norm(y)))


class SpectrogramDiffusion(nn.Module):
    """The three networks together, with the per-window encode / denoise split used by samplers."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.notes_encoder = NotesEncoder(cfg)
        self.context_encoder = ContextEncoder(cfg)
        self.decoder = FilmDecoder(cfg)

    def encode(
        self,
        tokens: torch.Tensor,  # [batch, tokens] int, PAD = 0 (may be trimmed to the longest real window)
        context: torch.Tensor,  # [batch, 256, 128] previous window, network range
        context_mask: torch.Tensor,  # [batch] bool: False for a song's first window (no context)
        note_cue: torch.Tensor | None = None,  # [batch, 256, cue_dims]; required by models with a cue
    ) -> WindowConditioning:
        notes, notes_mask = self.notes_encoder(tokens)
        frames_mask = context_mask[:, None].expand(-1, context.shape[1])  # [batch, 256]
        ctx = self.context_encoder(context, frames_mask)
        encoded = torch.cat([notes, ctx], dim=1)  # [batch, tokens + 256, d_model]
        return self.decoder.conditioning(encoded, torch.cat([notes_mask, frames_mask], dim=1), note_cue)

    def forward(
        self,
        x: torch.Tensor,
        noise_time: torch.Tensor,
        tokens: torch.Tensor,
        context: torch.Tensor,
        context_mask: torch.Tensor,
        num_conditioned: int | None = None,
        note_cue: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Training forward: the decoder's prediction (ε or v) [batch, 256, 128]; rows from `num_conditioned` on are
        unconditional."""
        n = x.shape[0] if num_conditioned is None else num_conditioned
        cue = None if note_cue is None else note_cue[:n]
        cache = self.encode(tokens[:n], context[:n], context_mask[:n], cue) if n > 0 else None
        return self.decoder(x, noise_time, cache)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())


def _encoder_block_shapes(cfg: ModelConfig) -> dict[str, tuple[int, ...]]:
    """The tensors of one `EncoderBlock`, by name within it."""
    d, inner = cfg.d_model, cfg.num_heads * cfg.d_kv
    return {
        "attn_norm.weight": (d,),
        "attn.q.weight": (inner, d),
        "attn.k.weight": (inner, d),
        "attn.v.weight": (inner, d),
        "attn.o.weight": (d, inner),
        "ff_norm.weight": (d,),
        "ff.wi_0.weight": (cfg.d_ff, d),
        "ff.wi_1.weight": (cfg.d_ff, d),
        "ff.wo.weight": (d, cfg.d_ff),
    }


def _decoder_block_shapes(cfg: ModelConfig) -> dict[str, tuple[int, ...]]:
    """The tensors of one `DecoderBlock`, by name within it."""
    d, inner, film = cfg.d_model, cfg.num_heads * cfg.d_kv, (2 * cfg.d_model, 4 * cfg.d_model)
    attention = {f"{p}.weight": (d, inner) if p == "o" else (inner, d) for p in "qkvo"}
    return {
        "self_norm.weight": (d,),
        "self_film.scale_shift.weight": film,
        **{f"self_attn.{name}": shape for name, shape in attention.items()},
        "cross_norm.weight": (d,),
        **{f"cross_attn.{name}": shape for name, shape in attention.items()},
        "ff_norm.weight": (d,),
        "ff_film.scale_shift.weight": film,
        "ff.wi_0.weight": (cfg.d_ff, d),
        "ff.wi_1.weight": (cfg.d_ff, d),
        "ff.wo.weight": (d, cfg.d_ff),
    }


def _stack(prefix: str, layers: int, block: dict[str, tuple[int, ...]]) -> dict[str, tuple[int, ...]]:
    """`block`'s tensors for each of `layers` blocks under `prefix`."""
    return {f"{prefix}.{i}.{name}": shape for i in range(layers) for name, shape in block.items()}


def tensor_shapes(cfg: ModelConfig) -> dict[str, tuple[int, ...]]:
    """The name and shape of every tensor of `SpectrogramDiffusion(cfg).state_dict()`, in its order, worked out from
    the config alone: nothing is allocated, so a loader can check weights against a config asking for any size."""
    d = cfg.d_model
    encoder = _encoder_block_shapes(cfg)
    notes = {
        "notes_encoder.position_table": (cfg.max_tokens, d),
        "notes_encoder.token_embedding.weight": (cfg.vocab_size, d),
        **_stack("notes_encoder.encoder.blocks", cfg.num_notes_layers, encoder),
        "notes_encoder.encoder.final_norm.weight": (d,),
    }
    context = {
        "context_encoder.position_table": (cfg.targets_length, d),
        "context_encoder.input_proj.weight": (d, cfg.input_dims),
        **_stack("context_encoder.encoder.blocks", cfg.num_context_layers, encoder),
        "context_encoder.encoder.final_norm.weight": (d,),
    }
    decoder = {
        "decoder.position_table": (cfg.targets_length, d),
        "decoder.time_mlp.0.weight": (4 * d, d),
        "decoder.time_mlp.2.weight": (4 * d, 4 * d),
        "decoder.input_proj.weight": (d, cfg.input_dims),
        **({"decoder.cue_proj.weight": (d, cfg.cue_dims)} if cfg.cue_dims else {}),
        **_stack("decoder.blocks", cfg.num_decoder_layers, _decoder_block_shapes(cfg)),
        "decoder.final_norm.weight": (d,),
        "decoder.output_proj.weight": (cfg.input_dims, d),
    }
    return {**notes, **context, **decoder}
