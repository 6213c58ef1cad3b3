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
any width: 64 at r = 8 whether the layer is 768 or 8192 wide. At equal rank
that is 100-250x fewer than LoRA's r (in + out) on 7B models: 183x on
Mistral-7B and 249x on Gemma-7B at r = 64, every linear layer adapted. (At
unequal ranks, as in many of the paper's tables, the ratio is whatever the
two ranks make it.)

The start: R is tiny noise (std 1e-5, as in the paper's code), so ΔW ≈ 0 and
the adapted model starts almost exactly as the pretrained one. What B and A
bring is not a head start but a direction: with R = I and alpha = r, B R A
would be U_r Σ_r V_rᵀ, the best rank-r approximation of W (Eckart-Young), so
every update is confined to the subspace where W itself acts most strongly.
Unlike LoRA's B = 0, R needs no non-zero partner to learn: its gradient,
dL/dR = s Bᵀ (dL/dy) (A x)ᵀ, does not involve R itself.

When is that subspace well defined? Only when σ_r > σ_{r+1}. If the two are
nearly equal, any mix of u_r and u_{r+1} is an equally good r-th direction,
and rounding decides which one the SVD returns: another machine or library
version may rebuild a different B from the same W. The layer records
gap = σ_r / σ_{r+1}, and `add_adapters` warns when it is close to 1.
"""

import math

import torch
import torch.nn.functional as F

from ..errors import LoraxsError
from .base import AdaptedLinear, new_parameter
from .svd import truncated_svd


def check_loraxs_rank(layer, rank, method="LoRA-XS"):
    """The SVD of an out x in matrix has min(in, out) singular values: r can be at most that."""
    largest = min(layer.in_features, layer.out_features)
    if rank > largest:
        raise LoraxsError(
            f"{method} rank {rank} is too large for a {layer.out_features} x {layer.in_features} layer: its "
            f"SVD has only {largest} singular values; choose rank <= {largest}"
        )


def loraxs_svd(W, rank, method="gram"):
    """
    The top triplets LoRA-XS needs at `rank`: one more than r when the matrix
    has it, to see the gap after σ_r. Any larger number of top triplets works
    too: B and A at rank r are their first r columns and rows.
    """
    return truncated_svd(W, min(rank + 1, *W.shape), method)  # float32 (see svd.py)


class SVDCache:
    """
    Each matrix's top singular triplets, computed once for the largest rank a
    sweep needs and sliced for the smaller ones: the SVD of W depends on
    neither the seed nor the rank. Keyed by layer name, so it serves copies of
    one base model only. The randomized SVD is not cached: what it finds
    depends on how many triplets it is asked for.
    """

    def __init__(self, max_rank):
        self.max_rank, self.triplets = max_rank, {}

    def get(self, name, W, method):
        if method == "randomized":
            return None
        if (name, method) not in self.triplets:
            self.triplets[name, method] = loraxs_svd(W, self.max_rank, method)
        return self.triplets[name, method]


def top_triplets(base, rank, svd="gram", triplets=None):
    """
    (U_r, Σ_r, V_rᵀ, gap) of the layer's weight, gap = σ_r / σ_{r+1}: what LoRA-XS (and TinyLoRA) build B and A
    from. `triplets`: the SVD of base.weight already computed at rank r or more (SVDCache), or None to compute it.
    """
    U, S, Vh = loraxs_svd(base.weight, rank, svd) if triplets is None else triplets
    gap = (S[rank - 1] / S[rank]).item() if len(S) > rank and not S.is_meta else math.inf
    return U[:, :rank], S[:rank], Vh[:rank], gap


class LoRAXSLinear(AdaptedLinear):
    def __init__(self, base, rank, alpha, dropout=0.0, generator=None, svd="gram", triplets=None):
        check_loraxs_rank(base, rank)
        super().__init__(base, rank, dropout)
        self.scaling = alpha / rank
        U_r, S_r, Vh_r, self.gap = top_triplets(base, rank, svd, triplets)
        # Frozen: buffers, not parameters. Rebuilt from W when an adapter file is loaded, unless stored in it.
        self.register_buffer("B", U_r.contiguous(), persistent=False)  # out x r: U_r
        self.register_buffer("A", S_r[:, None] * Vh_r, persistent=False)  # r x in: Σ_r V_rᵀ
        R = torch.randn(rank, rank, generator=generator) * 1e-5
        self.R = new_parameter(R, like=base.weight)  # r x r, the only trained tensor

    def update(self, x):
        # x (..., in) -> A x (..., r) -> R A x (..., r) -> B R A x (..., out); scaled while it is r wide
        return F.linear(F.linear(F.linear(x, self.A), self.R) * self.scaling, self.B)

    def delta_weight(self):
        return self.scaling * self.B @ self.R @ self.A  # (out x r)(r x r)(r x in)
