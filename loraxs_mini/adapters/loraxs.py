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

SVD_METHODS = ("exact", "randomized")


def truncated_svd(W, rank, method="exact", power_iterations=6):
    """
    The top-r singular triplets of W (out x in), in float32:
    U_r (out x r, orthonormal columns), S_r (r, descending), V_rᵀ (r x in).

    exact       torch.linalg.svd: every singular triplet, then keep r.
    randomized  Halko, Martinsson & Tropp (2011): find the r-dimensional
                subspace W mostly acts on by multiplying W with a few random
                vectors, sharpen it with power iterations, and take the exact
                SVD of W projected onto it. Costs a few thin matrix products
                instead of a full decomposition; its accuracy is measured in
                the benchmark (python -m loraxs_mini.bench).
    """
    W = W.detach().float()
    if method == "exact":
        U, S, Vh = torch.linalg.svd(W, full_matrices=False)
    elif method == "randomized":
        # q = 2r columns: the extra r soak up directions just below the top r, so those converge fast.
        q = min(2 * rank, *W.shape)
        # Its own fixed seed: B and A must depend on W alone, so that loading an adapter rebuilds them.
        omega = torch.randn(W.shape[1], q, generator=torch.Generator().manual_seed(0)).to(W.device)  # in x q
        Q = torch.linalg.qr(W @ omega).Q  # out x q, orthonormal: a first guess of W's column space
        for _ in range(power_iterations):  # each round multiplies by W Wᵀ: gaps widen as (σ_i / σ_q)^2
            Q = torch.linalg.qr(W @ torch.linalg.qr(W.T @ Q).Q).Q
        U_small, S, Vh = torch.linalg.svd(Q.T @ W, full_matrices=False)  # exact SVD of a q x in matrix
        U = Q @ U_small
    else:
        raise LoraxsError(f"unknown SVD method {method!r}; choose one of {', '.join(SVD_METHODS)}")
    U, S, Vh = U[:, :rank], S[:rank], Vh[:rank]
    # (u_i, v_i) and (-u_i, -v_i) are both correct singular vectors, and libraries differ in which they
    # return. Fix one: the largest entry of each u_i is positive. Adapter files store only R, so B and A
    # must come out the same on every machine that rebuilds them.
    signs = torch.sign(U.gather(0, U.abs().argmax(dim=0, keepdim=True))).squeeze(0)  # r values of ±1
    return U * signs, S, Vh * signs[:, None]


class LoRAXSLinear(AdaptedLinear):
    def __init__(self, base, rank, alpha, dropout=0.0, generator=None, svd="exact"):
        if rank > min(base.in_features, base.out_features):
            raise LoraxsError(
                f"LoRA-XS rank {rank} is too large for a {base.out_features} x {base.in_features} layer: its "
                f"SVD has only {min(base.in_features, base.out_features)} singular values; choose "
                f"rank <= {min(base.in_features, base.out_features)}"
            )
        super().__init__(base, rank, dropout)
        self.scaling = alpha / rank
        self.svd_method = svd
        U, S, Vh = truncated_svd(base.weight, rank, svd)
        # Frozen and rebuilt from W whenever the adapter is loaded: buffers, not parameters.
        self.register_buffer("B", U.to(base.weight.dtype), persistent=False)  # out x r
        self.register_buffer("A", (S[:, None] * Vh).to(base.weight.dtype), persistent=False)  # r x in: Σ_r V_rᵀ
        R = torch.randn(rank, rank, generator=generator) * 1e-5
        self.R = new_parameter(R, like=base.weight)  # r x r, the only trained tensor

    def update(self, x):
        # x (..., in) -> A x (..., r) -> R A x (..., r) -> B R A x (..., out)
        return F.linear(F.linear(F.linear(x, self.A), self.R), self.B) * self.scaling

    def delta_weight(self):
        return self.scaling * self.B @ self.R @ self.A  # (out x r)(r x r)(r x in)
