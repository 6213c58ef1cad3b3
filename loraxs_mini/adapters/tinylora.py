"""
TinyLoRA: LoRA-XS with R written as a mix of fixed random matrices
(Morris et al., 2026, "Learning to Reason in 13 Parameters").

    W  ≈  U_r Σ_r V_rᵀ                          truncated SVD of the pretrained weight, as in LoRA-XS
    B  =  U_r Σ_r^½       out x r              frozen
    A  =  Σ_r^½ V_rᵀ      r x in               frozen
    P_1 ... P_u           r x r each           frozen, random, N(0, 1/r), drawn from a seed
    v                     u numbers            the only trained tensor

    R  =  Σ_i v_i P_i                           (r x r)
    y  =  W x + B R A x

LoRA-XS trains the r² entries of R directly. TinyLoRA trains u numbers
instead and lets fixed random matrices turn them into R: a layer costs u
numbers, whatever r is. With u = r² the P_i span every r x r matrix (almost
surely), so TinyLoRA reaches exactly the updates LoRA-XS reaches; with u < r²
it reaches a random u-dimensional slice of them; with u > r² some of v is
redundant. Layers can also share one v (`weight_tying`): then a whole group
of layers trains u numbers together, which is how the paper gets down to 13.

Everything here follows Hugging Face PEFT's `tinylora` (peft/tuners/tinylora,
layer.py `_init_svd` and `update_layer`), so the two build the same subspace
and the same projections from the same seed:
- Σ_r is split evenly, √Σ_r into each of B and A (PEFT: "avoids imbalanced
  norms between A and B"), where LoRA-XS puts all of it in A. With R = I the
  product is again U_r Σ_r V_rᵀ, and both reach the same updates; what differs
  is the step: entry R_ij moves ΔW by √(σ_i σ_j) u_i v_jᵀ here, σ_j u_i v_jᵀ in
  LoRA-XS.
- No scale: the update is B R A, there is no alpha.
- v starts at zero (PEFT's init_weights=True), so the adapted model starts
  exactly as the pretrained one; P is not zero, so v's gradient is not either:
  dL/dv_i = <P_i, dL/dR>.
- The P of the layer with index t among the targets (in the model's order)
  come from a generator seeded with seed + t: P = N(0, 1/r), shape (u, r, r).
- weight_tying w in [0, 1]: n targets form max(1, round(n (1 - w))) groups
  of consecutive layers, each sharing one v; 0 gives every layer its own.

The same subspace and the same P, but not always the same B and A: a singular
pair (u_i, v_i) is only defined up to its sign. svd.py fixes the signs (the
largest entry of each u_i positive) so that a reload rebuilds the same B and A;
PEFT takes LAPACK's as they come. Where the two differ (about half the pairs of
the tiny test model), the same v gives another ΔW. So a trained v carries over
only together with its B and A, which is why the export to PEFT stores them
(tests/test_peft_crosscheck.py measures both).

PEFT's TinyLoraConfig defaults are r = 2, u = 64, weight_tying = 0 and
projection_seed = 42; ours are the same r, u and weight_tying, and the
projection seed is the run's seed (0 unless --seed says otherwise). r = 2 with
u = 64 gives 64 numbers per layer that mix only r² = 4 matrices, as redundant
as it sounds (see lesson 08).
"""

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..errors import LoraxsError, is_number, is_whole
from .base import PEFT_PREFIX, AdaptedLinear, new_parameter
from .loraxs import check_svd_rank, check_svd_ranks, top_triplets, warn_about_narrow_gaps

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
    name, display_name = "tinylora", "TinyLoRA"
    default_rank = 2  # PEFT's TinyLoraConfig: r = 2, u = 64, weight_tying = 0 (each layer its own v)
    settings = {"u": 64, "weight_tying": 0.0}
    uses_svd = True
    learning_rates = {2: 1e-2, 8: 3e-3}  # u = 64; r = 4, halfway in log r, takes r = 2's (docs/defaults.md)

    @classmethod
    def check_settings(cls, config):
        config.u = cls.settings["u"] if config.u is None else config.u
        if not is_whole(config.u) or config.u < 1:
            raise LoraxsError(f"u must be a positive whole number, got {config.u!r}")
        config.weight_tying = cls.settings["weight_tying"] if config.weight_tying is None else config.weight_tying
        if not is_number(config.weight_tying) or not 0 <= config.weight_tying <= 1:
            raise LoraxsError(f"weight_tying must be a number in [0, 1], got {config.weight_tying!r}")
        config.weight_tying = float(config.weight_tying)

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
    def adapt(cls, layers, config, svd_cache=None, first_step=None):
        groups = tinylora_groups(len(layers), config.weight_tying)  # one v per group of consecutive layers
        like = next(iter(layers.values())).weight
        vectors = [TinyLoRAVector(config.u, like) for _ in range(max(groups) + 1)]
        adapters = {}
        for index, (name, layer) in enumerate(layers.items()):  # layer t's P come from seed + t (PEFT's rule)
            triplets = svd_cache.get(name, layer.weight, config.svd) if svd_cache is not None else None
            vector = vectors[groups[index]]
            adapters[name] = cls(layer, config.rank, vector, config.seed + index, config.dropout, config.svd, triplets)
            yield name, adapters[name]
        warn_about_narrow_gaps(adapters)

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
