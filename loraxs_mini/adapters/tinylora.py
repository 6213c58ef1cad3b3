"""
TinyLoRA: LoRA-XS with R written as a mix of fixed random matrices
(Morris et al., 2026, "Learning to Reason in 13 Parameters").

    W  ≈  U_r Σ_r V_rᵀ                          truncated SVD of the pretrained weight, as in LoRA-XS
    B  =  U_r Σ_r^½       out x r              frozen
    A  =  Σ_r^½ V_rᵀ      r x in               frozen
    P_1 ... P_u           r x r each           frozen, random, N(0, 1/r), from seed + the layer's index
    v                     u numbers            the only trained tensor, zero at the start

    R  =  Σ_i v_i P_i                           (r x r)
    y  =  W x + B R A x

LoRA-XS trains the r² entries of R directly. TinyLoRA trains u numbers instead and lets fixed random matrices
turn them into R: a layer costs u numbers, whatever r is. With u = r² the P_i span every r x r matrix (almost
surely), so TinyLoRA reaches exactly the updates LoRA-XS reaches; with u < r² a random u-dimensional slice of
them. Layers can also share one v (`weight_tying`): a whole group of layers then trains u numbers together,
which is how the paper gets down to 13. v starts at zero, so the model starts as the pretrained one, yet its
gradient dL/dv_i = <P_i, dL/dR> is not zero.

It follows Hugging Face PEFT's `tinylora` so that both build the same subspace and projections from the same seed
(Σ_r split evenly into B and A, no alpha, PEFT's defaults r = 2, u = 64); where and why the two still differ, and
what the seed of P is: docs/methods.md.
"""

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..errors import LoraxsError, is_number, is_whole
from .base import PEFT_PREFIX, AdaptedLinear, Setting, new_parameter
from .svd import check_svd_rank, check_svd_ranks, top_triplets, warn_about_narrow_gaps

MAX_PROJECTION_BYTES = 2**31  # P of all layers together: 48 x 64 x 2 x 2 x 4 bytes = 48 KiB for GPT-2


class TinyLoRAVector(nn.Module):
    """The trained vector v (u numbers), shared by every layer of one group: the same module in each."""

    def __init__(self, u, like):
        super().__init__()
        self.v = new_parameter(torch.zeros(u), like=like)  # zero: ΔW = 0 at the start


def tinylora_groups(count, weight_tying):
    """The group of each of `count` target layers, in order: PEFT's rule for weight_tying in [0, 1]."""
    groups = max(1, round(count * (1.0 - weight_tying)))
    size = max(1, count // groups)
    return [min(index // size, groups - 1) for index in range(count)]


class TinyLoRALinear(AdaptedLinear):
    def __init__(self, base, rank, vector, projection_seed, dropout=0.0, svd="gram", triplets=None):
        """`projection_seed`: the seed of this layer's P, the config's seed plus the layer's index among the targets."""
        check_svd_rank(base, rank, self.display_name)
        super().__init__(base, rank, dropout)
        U_r, S_r, Vh_r, self.gap = top_triplets(base, rank, svd, triplets)  # the SVD exactly as LoRA-XS takes it
        root = S_r.sqrt()  # √Σ_r, half of the singular values to each side
        self.register_buffer("B", (U_r * root).contiguous(), persistent=False)  # out x r: U_r Σ_r^½
        self.register_buffer("A", (root[:, None] * Vh_r).contiguous(), persistent=False)  # r x in: Σ_r^½ V_rᵀ
        u = vector.v.numel()
        generator = torch.Generator().manual_seed(projection_seed)
        P = torch.normal(0.0, 1.0 / rank**0.5, size=(u, rank, rank), generator=generator)  # PEFT's draw, to the bit
        self.register_buffer("P", P.to(device=base.weight.device, dtype=torch.float32), persistent=False)
        self.vector = vector  # the same module in every layer of the group: trained and stored once

    def R(self):
        return torch.einsum("i,ijk->jk", self.vector.v, self.P)  # Σ_i v_i P_i: (u) x (u, r, r) -> (r, r)

    def update(self, x):
        # x (..., in) -> A x (..., r) -> R A x (..., r) -> B R A x (..., out)
        return F.linear(F.linear(F.linear(x, self.A), self.R()), self.B)

    def delta_weight(self):
        return self.B @ self.R() @ self.A  # (out x r)(r x r)(r x in)

    def lora_factors(self):
        with torch.no_grad():
            return self.A, self.B @ self.R()  # A' = A, B' = B R

    # What the registry needs (base.py's table).
    name, display_name = "tinylora", "TinyLoRA"
    default_rank = 2  # PEFT's TinyLoraConfig: r = 2, u = 64, weight_tying = 0 (each layer its own v)
    settings = {
        "u": Setting(64, "trained numbers per group of layers"),
        "weight_tying": Setting(0.0, "0: each layer its own v, 1: one v for all"),
    }
    learning_rates = {2: 1e-2, 8: 3e-3}  # u = 64; r = 4, halfway in log r, takes r = 2's (docs/defaults.md)

    @classmethod
    def check_settings(cls, config):
        if not is_whole(config.u) or config.u < 1:
            raise LoraxsError(f"u must be a positive whole number, got {config.u!r}")
        if not is_number(config.weight_tying) or not 0 <= config.weight_tying <= 1:
            raise LoraxsError(f"weight_tying must be a number in [0, 1], got {config.weight_tying!r}")
        config.settings["weight_tying"] = float(config.weight_tying)

    @classmethod
    def check_layers(cls, layers, config):
        check_svd_ranks(layers, config.rank, cls.display_name)
        if 4 * config.u * config.rank**2 * len(layers) > MAX_PROJECTION_BYTES:
            raise LoraxsError(
                f"TinyLoRA with u = {config.u:,} at rank {config.rank} needs {len(layers)} x {config.u:,} random "
                f"{config.rank} x {config.rank} matrices, over 2 GiB; choose a smaller u (u = r² = "
                f"{config.rank**2} already spans every R)"
            )

    @classmethod
    def adapt(cls, layers, config, build):
        groups = tinylora_groups(len(layers), config.weight_tying)  # one v per group of consecutive layers
        like = next(iter(layers.values())).weight
        vectors = [TinyLoRAVector(config.u, like) for _ in range(max(groups) + 1)]
        adapters = {}
        for index, (name, layer) in enumerate(layers.items()):  # layer t's P come from seed + t (PEFT's rule)
            triplets = build.svd_cache.get(name, layer.weight, config.svd) if build.svd_cache else None
            vector = vectors[groups[index]]
            adapters[name] = cls(layer, config.rank, vector, config.seed + index, config.dropout, config.svd, triplets)
            yield name, adapters[name]
        warn_about_narrow_gaps(adapters)

    @classmethod
    def peft_format(cls, layers, config):
        """PEFT's TinyLoRA, the projections saved: A, B, P per layer; one v per group, numbered in the layers' order."""
        groups, tensors = {}, {}
        for name, layer in layers.items():
            group = groups.setdefault(id(layer.vector), len(groups))  # groups are runs of consecutive layers
            tensors[f"base_model.tinylora_v.{group}"] = layer.vector.v.detach()
            for tensor in ("A", "B", "P"):
                tensors[f"{PEFT_PREFIX}{name}.tinylora_{tensor}"] = getattr(layer, tensor)
        settings = {
            "peft_type": "TINYLORA", "r": config.rank, "u": config.u, "weight_tying": config.weight_tying,
            "projection_seed": config.seed, "save_projection": True, "tinylora_dropout": config.dropout,
            "init_weights": True, "init_v_bound": 0.02,
        }  # fmt: skip
        return settings, tensors
