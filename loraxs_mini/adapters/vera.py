"""
VeRA: Vector-based Random Matrix Adaptation (Kopiczko et al., 2024).

    y = W x + Λ_b B Λ_d A x,      Λ_b = diag(b), Λ_d = diag(d)

    A  r x in     frozen, random, shared by every adapted layer
    B  out x r    frozen, random, shared by every adapted layer
    d  r          trained, 0.1 at the start
    b  out        trained, zero at the start, so ΔW = 0 and nothing changes

Where LoRA learns A and B, VeRA keeps one random pair for the whole model
and learns only how to scale its rows and columns. Trainable parameters per
layer: r + out, and r can be large (256 or more) because it costs only r
numbers per layer.

Layers have different shapes, so the model keeps one pair large enough for
all of them, A: r x max_in and B: max_out x r, and each layer uses the slices
A[:, :in] and B[:out, :]. The pair is drawn from a seeded generator (A first,
then B, each uniform in ±sqrt(6 / fan_in)), so the seed rebuilds it: adapter
files store it only when asked (`save_adapters(..., frozen=True)`, as PEFT's
`save_projection` does by default), and otherwise a checksum of it. Hugging
Face PEFT draws the same numbers from the same seed (its
`projection_prng_key`), so the two can be compared number for number.
Its defaults (rank 256, PEFT's): docs/methods.md.
"""

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..errors import LoraxsError
from .base import ADAPTER_DTYPE, PEFT_PREFIX, AdaptedLinear, new_parameter

MAX_PAIR_BYTES = 2**31  # 2 GiB; at rank 256, GPT-2 XL's pair is 256 x (6400 + 6400) x 4 bytes = 12.5 MiB


def kaiming_uniform(shape, generator):
    """Uniform in ±sqrt(6 / fan_in), fan_in = shape[1]: PEFT's `_kaiming_init` for VeRA."""
    bound = math.sqrt(6.0 / shape[1])
    return torch.empty(shape).uniform_(-bound, bound, generator=generator)


class VeRAProjections(nn.Module):
    """The frozen random pair (A: r x max_in, B: max_out x r) that every VeRA layer of a model shares."""

    def __init__(self, rank, max_in, max_out, seed, like):
        super().__init__()
        generator = torch.Generator(device="cpu").manual_seed(seed)
        A = kaiming_uniform((rank, max_in), generator)  # drawn first
        B = kaiming_uniform((max_out, rank), generator)  # then B, from the same stream
        # Buffers, not parameters: they move with .to(device) but are never trained.
        self.register_buffer("A", A.to(device=like.device, dtype=ADAPTER_DTYPE), persistent=False)
        self.register_buffer("B", B.to(device=like.device, dtype=ADAPTER_DTYPE), persistent=False)
        self.rank = rank


class VeRALinear(AdaptedLinear):
    def __init__(self, base, projections: VeRAProjections, dropout=0.0, d_initial=0.1):
        super().__init__(base, projections.rank, dropout)
        self.projections = projections  # the same module object in every layer: shared, stored once
        self.lambda_d = new_parameter(torch.full((self.rank,), d_initial), like=base.weight)  # r
        self.lambda_b = new_parameter(torch.zeros(self.out_features), like=base.weight)  # out

    def shared_matrices(self):
        """This layer's slices of the shared pair: A (r x in), B (out x r)."""
        return self.projections.A[:, : self.in_features], self.projections.B[: self.out_features, :]

    def update(self, x):
        A, B = self.shared_matrices()
        # x (..., in) -> A x (..., r) -> scaled by d -> B(...) (..., out) -> scaled by b
        return self.lambda_b * F.linear(self.lambda_d * F.linear(x, A), B)

    def delta_weight(self):
        A, B = self.shared_matrices()
        # diag(b) B diag(d) A: scale B's rows by b and its columns by d, then multiply by A.
        return (self.lambda_b[:, None] * B * self.lambda_d[None, :]) @ A

    def lora_factors(self):
        A, B = self.shared_matrices()
        return self.lambda_d.detach()[:, None] * A, self.lambda_b.detach()[:, None] * B  # A' = Λ_d A, B' = Λ_b B

    # What the registry needs (base.py's table).
    name, display_name = "vera", "VeRA"
    default_rank = 256  # PEFT's VeraConfig (r = 256)
    learning_rates = {64: 1e-2, 256: 3e-2, 1024: 1e-2}  # docs/defaults.md

    @classmethod
    def check_layers(cls, layers, config):
        """r may exceed the width (the pair is random), but not the memory."""
        widest_in = max(layer.in_features for layer in layers.values())
        widest_out = max(layer.out_features for layer in layers.values())
        pair_bytes = 4 * config.rank * (widest_in + widest_out)  # A: r x in, B: out x r, float32
        if pair_bytes > MAX_PAIR_BYTES:
            raise LoraxsError(
                f"VeRA rank {config.rank:,} needs a shared random pair of {pair_bytes / 2**30:,.1f} GiB on this "
                f"model; choose a rank up to {MAX_PAIR_BYTES // (4 * (widest_in + widest_out)):,}"
            )

    @classmethod
    def adapt(cls, layers, config, build):
        widest_in = max(layer.in_features for layer in layers.values())
        widest_out = max(layer.out_features for layer in layers.values())
        like = next(iter(layers.values())).weight
        projections = VeRAProjections(config.rank, widest_in, widest_out, config.seed, like)  # one pair for all
        for name, layer in layers.items():
            yield name, cls(layer, projections, config.dropout)

    @classmethod
    def peft_format(cls, layers, config):
        """PEFT's VeRA, the shared pair saved (save_projection): d and b per layer."""
        projections = next(iter(layers.values())).projections
        tensors = {"base_model.vera_A": projections.A, "base_model.vera_B": projections.B}
        for name, layer in layers.items():
            tensors[f"{PEFT_PREFIX}{name}.vera_lambda_d"] = layer.lambda_d.detach()
            tensors[f"{PEFT_PREFIX}{name}.vera_lambda_b"] = layer.lambda_b.detach()
        settings = {
            "peft_type": "VERA", "r": config.rank, "projection_prng_key": config.seed, "save_projection": True,
            "vera_dropout": config.dropout, "d_initial": 0.1, "init_weights": True,
        }  # fmt: skip
        return settings, tensors
