"""
LoRA-XS: Low-Rank Adaptation with eXtremely Small number of parameters
(Bałazy et al., 2024).

    W  ≈  U_r Σ_r V_rᵀ                    truncated SVD of the pretrained weight
    B  =  U_r           out x r          frozen
    A  =  Σ_r V_rᵀ      r x in           frozen
    R                   r x r            the only trained matrix

    y = W x + (alpha / r) B R A x

Why this works: the top-r singular directions of a pretrained matrix are the
directions it uses most. LoRA-XS keeps them fixed and learns only how to mix
them, an r x r matrix R. Every update B R A therefore has its columns in
span(U_r) and its rows in span(V_r). Trainable parameters per layer: r², for
any width: 64 at r = 8 whether the layer is 768 or 8192 wide, which is how it
uses over 100x fewer parameters than LoRA on 7B models.

With R = I and alpha = r, B R A = U_r Σ_r V_rᵀ is the best rank-r
approximation of W (Eckart-Young): that is the sense in which A and B are
"the most important part" of W. R starts as tiny noise (std 1e-5, as in the
paper's code), so the adapted model starts almost exactly as the pretrained
one. Unlike LoRA's B = 0, R needs no non-zero partner to learn: its gradient,
dL/dR = s Bᵀ (dL/dy) (A x)ᵀ, does not involve R itself.
"""

import torch
import torch.nn.functional as F

from ..errors import LoraxsError
from .base import AdaptedLinear, new_parameter
from .svd import truncated_svd


def check_loraxs_rank(layer, rank):
    """The SVD of an out x in matrix has min(in, out) singular values: r can be at most that."""
    largest = min(layer.in_features, layer.out_features)
    if rank > largest:
        raise LoraxsError(
            f"LoRA-XS rank {rank} is too large for a {layer.out_features} x {layer.in_features} layer: its "
            f"SVD has only {largest} singular values; choose rank <= {largest}"
        )


class LoRAXSLinear(AdaptedLinear):
    def __init__(self, base, rank, alpha, dropout=0.0, generator=None, svd="gram"):
        check_loraxs_rank(base, rank)
        super().__init__(base, rank, dropout)
        self.scaling = alpha / rank
        U, S, Vh = truncated_svd(base.weight, rank, svd)  # top-r triplets, float32 (see svd.py)
        # Frozen and rebuilt from W whenever the adapter is loaded: buffers, not parameters.
        self.register_buffer("B", U.to(base.weight.dtype), persistent=False)  # out x r
        self.register_buffer("A", (S[:, None] * Vh).to(base.weight.dtype), persistent=False)  # r x in: Σ_r V_rᵀ
        R = torch.randn(rank, rank, generator=generator) * 1e-5
        self.R = new_parameter(R, like=base.weight)  # r x r, the only trained tensor

    def update(self, x):
        # x (..., in) -> A x (..., r) -> R A x (..., r) -> B R A x (..., out); scaled while it is r wide
        return F.linear(F.linear(F.linear(x, self.A), self.R) * self.scaling, self.B)

    def delta_weight(self):
        return self.scaling * self.B @ self.R @ self.A  # (out x r)(r x r)(r x in)
