"""
The top-r singular triplets of a weight matrix, three ways.

LoRA-XS needs W ≈ U_r Σ_r V_rᵀ for every adapted matrix: 72 of them in GPT-2
124M (48 with c_attn taken whole), 288 in gpt2-xl. A full SVD computes all
min(in, out) triplets to keep r of them, which costs seconds per model on a
laptop CPU. Three methods:

    svd         torch.linalg.svd: the textbook route, every triplet, then keep r.
    gram        (default) the eigendecomposition of the small Gram matrix:
                    WᵀW = V Σ² Vᵀ  (in x in, when in <= out)
                so V_r and σ_i² come from `eigh`, and U_r = W V_r / σ. Squaring
                loses precision only in the small singular values, which LoRA-XS
                throws away; the top-r subspace comes out as exact as from the
                float32 SVD, about four times faster.
    randomized  Halko, Martinsson & Tropp (2011): multiply W by a few random
                vectors, sharpen with power iterations, solve a small SVD.
                Fastest, and approximate where σ_r is close to the values just
                below it. On the small pretrained model (rank 8; c_attn, its
                thirds q, k, v and the three other layers of every block)
                the largest principal angle to the exact subspace had a median
                sine of 0.21 (0.99 in the worst matrix), yet every subspace it
                found kept at least 97.9% of the energy Σ_{i<=r} σ_i² of the
                exact one: a slightly different, nearly as good subspace. One
                version of the paper's code uses scikit-learn's randomized
                TruncatedSVD, another the full torch.linalg.svd.

Eckart-Young says U_r Σ_r V_rᵀ is the best rank-r approximation of W; it is
the only one when σ_r > σ_{r+1}. When the two are nearly equal, the r-th
direction is nearly arbitrary, and methods (or machines) may disagree on it.

Every method returns U_r (out x r), S_r (r), V_rᵀ (r x in) in float32, with the
same sign convention, so B and A do not depend on the library that computed them.
"""

import torch

from ..errors import LoraxsError

SVD_METHODS = ("gram", "svd", "randomized")


def truncated_svd(W, rank, method="gram", power_iterations=6):
    W = W.detach().float()
    if method == "svd":
        U, S, Vh = torch.linalg.svd(W, full_matrices=False)
        U, S, Vh = U[:, :rank], S[:rank], Vh[:rank]
    elif method == "gram":
        U, S, Vh = gram_svd(W, rank)
    elif method == "randomized":
        U, S, Vh = randomized_svd(W, rank, power_iterations)
    else:
        raise LoraxsError(f"unknown SVD method {method!r}; choose one of {', '.join(SVD_METHODS)}")
    signs = fixed_signs(U)  # r values of ±1
    return U * signs, S, Vh * signs[:, None]


def fixed_signs(U):
    """
    (u_i, v_i) and (-u_i, -v_i) are both correct singular vectors, and libraries differ in which they return.
    Fix one: the largest entry of each u_i is positive. Adapter files store only R, so B and A must come out the
    same on every machine that rebuilds them. Returns one ±1 per column of U.
    """
    return torch.sign(U.gather(0, U.abs().argmax(dim=0, keepdim=True))).squeeze(0)


def gram_svd(W, rank):
    transposed = W.shape[1] > W.shape[0]  # work with the smaller Gram matrix
    if transposed:
        W = W.T  # now out >= in; swap U and V back at the end
    eigenvalues, eigenvectors = torch.linalg.eigh(W.T @ W)  # ascending: the largest come last
    S = eigenvalues[-rank:].flip(0).clamp_min(0).sqrt()  # σ_1 >= ... >= σ_r
    # Squaring leaves rounding noise of about sqrt(eps) σ_1 ≈ 3e-4 σ_1 on each σ. If σ_r is below 1% of σ_1,
    # that noise would matter (and U = W V / σ could divide by ~0): take the full SVD instead.
    if not W.is_meta and S[-1] < 1e-2 * S[0]:
        U, S, Vh = torch.linalg.svd(W, full_matrices=False)
        U, S, V = U[:, :rank], S[:rank], Vh[:rank].T
    else:
        V = eigenvectors[:, -rank:].flip(1)  # in x r
        U = (W @ V) / S  # out x r:  W v_i = σ_i u_i
    return (V, S, U.T) if transposed else (U, S, V.T)


def randomized_svd(W, rank, power_iterations):
    q = min(2 * rank, *W.shape)  # r extra columns soak up directions just below the top r
    # A fixed seed: B and A must depend on W alone, so that loading an adapter rebuilds them.
    omega = torch.randn(W.shape[1], q, generator=torch.Generator().manual_seed(0)).to(W.device)  # in x q
    Q = torch.linalg.qr(W @ omega).Q  # out x q, orthonormal: a first guess of W's column space
    for _ in range(power_iterations):  # each round multiplies by W Wᵀ: gaps widen as (σ_i / σ_q)^2
        Q = torch.linalg.qr(W @ torch.linalg.qr(W.T @ Q).Q).Q
    U_small, S, Vh = torch.linalg.svd(Q.T @ W, full_matrices=False)  # exact SVD of a q x in matrix
    return (Q @ U_small)[:, :rank], S[:rank], Vh[:rank]
