"""
The frozen pair (B, A) of LoRA-XS, and the controls that ask why it works: which directions, at which scale.

LoRA-XS freezes B = U_r and A = Σ_r V_rᵀ from W's top singular triplets; only R (r x r) trains. The pair has two
parts a control can change on its own:

    directions   span(B) and span(Aᵀ): W's top r singular directions, its bottom r, or random ones
    scale        the singular values that A carries: W's top Σ_r, or the directions' own

    subspace          scale   B (out x r)                  A (r x in)
    top               -       U_r                          Σ_r V_rᵀ           LoRA-XS, the paper's code's svd_on_w top
    bottom            top     U_bottom                     Σ_r V_bottomᵀ      only the directions differ
    bottom            own     U_bottom                     Σ_bottom V_bottomᵀ  the code's svd_on_w, retain_part bottom
    random            top     Q_out (orthonormal)          Σ_r Q_inᵀ          only the directions differ
    random            own     U'_r of K                    Σ'_r V'_rᵀ of K     the code's svd_on_random
    kaiming-uniform   -       Kaiming-uniform              Kaiming-uniform    the code's random

K is a seeded Kaiming-uniform matrix of W's shape, and (U', Σ', V') its SVD: random directions at a random matrix's
scale, far below W's top Σ_r. The paper's code builds every random matrix as torch's `kaiming_uniform_(a=√5)`
would for the tensor in its own layout, so its bound 1/√fan_in uses that tensor's second dimension: K is built
in x out (fan_in = out), A as in x r (fan_in = r, bound 1/√r), B as r x out (fan_in = out), each then transposed.
Source: github.com/MohammadrezaBanaei/LoRA-XS, branch refactor (e217002), utils/initialization_utils.py,
`find_and_initialize` and `get_svd_replacement_module` (more in docs/methods.md).

Every random pair comes from a generator seeded with the layer's own seed, so loading an adapter file rebuilds it.
"""

import math

import torch

from .svd import fixed_signs, loraxs_svd

SUBSPACES = ("top", "bottom", "random", "kaiming-uniform")
SCALES = ("top", "own")


def frozen_pair(base, rank, subspace, scale, seed, top):
    """
    (B, A, gap): the frozen out x r and r x in matrices of the table above for the layer `base`. `top`: its
    (U_r, Σ_r, V_rᵀ, gap). gap is σ_r / σ_(r+1) at the edge of the chosen singular directions (infinite when the
    pair is drawn, not chosen by singular values): where it is nearly 1, rounding decides the directions.
    """
    U_r, S_r, Vh_r, gap = top
    W = base.weight.detach().float()
    generator = torch.Generator().manual_seed(seed)
    if subspace == "top":
        U, S, Vh = U_r, S_r, Vh_r
    elif subspace == "bottom":  # every triplet (the Gram route would lose the small ones), then the last r
        U, S, Vh = torch.linalg.svd(W, full_matrices=False)
        signs = fixed_signs(U[:, -rank:])
        gap = (S[-rank - 1] / S[-rank]).item() if len(S) > rank else math.inf  # σ_(n-r) / σ_(n-r+1)
        U, S, Vh = U[:, -rank:] * signs, S[-rank:], Vh[-rank:] * signs[:, None]
    elif subspace == "random" and scale == "top":  # orthonormal columns from QR of Gaussian matrices
        U = torch.linalg.qr(torch.randn(W.shape[0], rank, generator=generator)).Q  # out x r
        V = torch.linalg.qr(torch.randn(W.shape[1], rank, generator=generator)).Q  # in x r
        U, S, Vh, gap = U.to(W.device), S_r, V.T.to(W.device), math.inf
    elif subspace == "random":  # svd_on_random: the top r of K's SVD, K built in x out as the code builds it
        K = kaiming_uniform(W.shape[1], W.shape[0], generator).T  # out x in
        U, S, Vh = loraxs_svd(K, rank, "svd")  # r + 1 triplets, to see the gap after σ_r
        gap = (S[rank - 1] / S[rank]).item() if len(S) > rank else math.inf
        U, S, Vh = U[:, :rank].to(W.device), S[:rank].to(W.device), Vh[:rank].to(W.device)
    else:  # kaiming-uniform, the code's random: no SVD, no singular values
        A = kaiming_uniform(W.shape[1], rank, generator).T  # built in x r: bound 1/√r
        B = kaiming_uniform(rank, W.shape[0], generator).T  # built r x out: bound 1/√out
        return B.to(W.device), A.to(W.device), math.inf
    S = S_r if scale == "top" else S  # the directions' own Σ, or W's top Σ_r in every subspace
    return U, S[:, None] * Vh, gap  # B = U, A = Σ Vᵀ


def kaiming_uniform(rows, columns, generator):
    """A rows x columns matrix as torch's kaiming_uniform_(a=√5) fills it: uniform in ±1/√fan_in, fan_in = columns."""
    return torch.nn.init.kaiming_uniform_(torch.empty(rows, columns), a=math.sqrt(5), generator=generator)
