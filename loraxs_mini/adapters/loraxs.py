"""
LoRA-XS: Low-Rank Adaptation with eXtremely Small number of parameters (Bałazy et al., 2024, arXiv 2405.17604).

    W  ≈  U_r Σ_r V_rᵀ                    truncated SVD of the pretrained weight
    B  =  U_r           out x r          frozen
    A  =  Σ_r V_rᵀ      r x in           frozen
    R                   r x r            the only trained matrix

    y = W x + (alpha / r) B R A x

The paper's bet: the top-r singular directions of a pretrained matrix are the ones it uses most, so they are
where an update should act. LoRA-XS keeps them fixed and learns only how to mix them, an r x r matrix R: every
update B R A has its columns in span(U_r) and its rows in span(V_r). Trainable numbers per layer: r², for any
width: 64 at r = 8 whether the layer is 768 or 8192 wide.

R starts as tiny noise (std 1e-5, as in the paper's code), so ΔW ≈ 0 and the model starts almost exactly as the
pretrained one. R needs no non-zero partner to learn, unlike LoRA's B = 0: its gradient
dL/dR = (alpha / r) Bᵀ (dL/dy) (A x)ᵀ does not involve R.

`subspace` and `scale` freeze other pairs, to test the bet (lesson 09): W's bottom r directions or random ones, at
W's top scale Σ_r or at their own, and the paper's code's Kaiming-uniform A and B (frozen_pairs.py has the table).
Why alpha = r, how each rate was chosen, and what the paper's code does: docs/methods.md.
"""

import torch
import torch.nn.functional as F

from ..errors import LoraxsError
from .base import AdaptedLinear, Setting, new_parameter
from .frozen_pairs import SCALES, SUBSPACES, frozen_pair
from .svd import check_svd_rank, check_svd_ranks, top_triplets, warn_about_narrow_gaps


class LoRAXSLinear(AdaptedLinear):
    def __init__(
        self,
        base,
        rank,
        alpha,
        dropout=0.0,
        generator=None,
        svd="gram",
        triplets=None,
        subspace="top",
        scale="top",
        layer_seed=0,
    ):
        """`triplets`: W's SVD if computed already; `layer_seed`: a random pair's (the seed + the layer's index)."""
        check_svd_rank(base, rank, self.display_name)
        super().__init__(base, rank, dropout)
        self.scaling = alpha / rank
        top = top_triplets(base, rank, svd, triplets)  # (U_r, Σ_r, V_rᵀ, gap)
        B, A, self.gap = frozen_pair(base, rank, subspace, scale, layer_seed, top)  # top: B = U_r, A = Σ_r V_rᵀ
        # Frozen: buffers, not parameters. Rebuilt from W (and the seed) when a file is loaded, unless stored in it.
        self.register_buffer("B", B.contiguous(), persistent=False)  # out x r
        self.register_buffer("A", A.contiguous(), persistent=False)  # r x in
        R = torch.randn(rank, rank, generator=generator) * 1e-5
        self.R = new_parameter(R, like=base.weight)  # r x r, the only trained tensor

    def update(self, x):
        # x (..., in) -> A x (..., r) -> R A x (..., r) -> B R A x (..., out); scaled while it is r wide
        return F.linear(F.linear(F.linear(x, self.A), self.R) * self.scaling, self.B)

    def delta_weight(self):
        return self.scaling * self.B @ self.R @ self.A  # (out x r)(r x r)(r x in)

    def lora_factors(self):
        with torch.no_grad():  # PEFT has no LoRA-XS: it runs as a LoRA of rank r
            return self.A, self.scaling * self.B @ self.R  # A' = A, B' = (alpha / r) B R

    # What the registry needs (base.py's table).
    name, display_name = "loraxs", "LoRA-XS"
    default_rank = 8
    learning_rates = {2: 1e-1, 4: 3e-2, 8: 1e-2, 16: 3e-3, 32: 3e-3}  # docs/defaults.md
    settings = {
        "subspace": Setting(
            "top", "the frozen directions: top, the paper's; bottom; random; kaiming-uniform", SUBSPACES
        ),
        "scale": Setting("top", "bottom's or random's singular values: top, W's top ones; own, their own", SCALES),
    }
    subspace_learning_rates = {  # each pair's own, chosen on validation (docs/defaults.md)
        ("bottom", "top"): {2: 1e-1, 4: 3e-2, 8: 3e-2, 16: 1e-2},
        ("random", "top"): {2: 3e-1, 4: 3e-1, 8: 3e-2, 16: 1e-2},
        ("bottom", "own"): {2: 1.0, 4: 1.0, 8: 3e-1, 16: 1e-1},  # 1 is train.py's largest rate
        ("random", "own"): {2: 3e-1, 4: 3e-1, 8: 3e-2, 16: 1e-2},
        ("kaiming-uniform", "top"): {2: 3e-1, 4: 3e-2, 8: 1e-2, 16: 3e-3},
    }

    @classmethod
    def default_alpha(cls, rank):
        return float(rank)  # the paper's math runs: lora_alpha = r, so alpha / r = 1 at every r

    @classmethod
    def check_settings(cls, config):
        why = {"top": "its own singular values are W's top ones", "kaiming-uniform": "it has no singular values"}
        if config.scale == "own" and config.subspace in why:
            raise LoraxsError(
                f"scale 'own' is for the bottom and random subspaces ({config.subspace}: {why[config.subspace]}); "
                "leave it out"
            )

    @classmethod
    def run_label(cls, config):
        own = "-own-scale" if config.scale == "own" else ""
        return cls.name if config.subspace == "top" else f"{cls.name}-{config.subspace}{own}"

    @classmethod
    def learning_rates_for(cls, config=None):
        pair = (config.subspace, config.scale) if config else ("top", "top")
        return cls.subspace_learning_rates.get(pair, cls.learning_rates)

    @classmethod
    def check_layers(cls, layers, config):
        check_svd_ranks(layers, config.rank, cls.display_name)

    @classmethod
    def adapt(cls, layers, config, build):
        """The default, one layer after another; then one warning for the layers whose subspace hangs on rounding."""
        adapters = {}
        for name, adapter in super().adapt(layers, config, build):
            adapters[name] = adapter
            yield name, adapter
        warn_about_narrow_gaps(adapters)
