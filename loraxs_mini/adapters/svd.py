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

Below the three routes: what LoRA-XS, TinyLoRA and LoRA-SB share on top of them. The rank a layer's SVD allows
(check_svd_ranks), the top triplets with the gap σ_r / σ_{r+1} after them and the warning when it is nearly 1
(top_triplets, warn_about_narrow_gaps) and each matrix's SVD computed once for a whole sweep (SVDCache). The
other pairs LoRA-XS can freeze, for lesson 09's question, are in frozen_pairs.py.
"""

import math
import warnings

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


# Below this σ_r / σ_{r+1}, the top-r subspace hangs on rounding. On the small pretrained model, the Gram route and the
# full float32 SVD disagreed on U_r by a sine of 1.4e-3 at a gap of 1.0003, by at most 4e-5 at every gap above 1.005:
# the disagreement grows roughly as 1 / (gap - 1).
NARROW_GAP = 1.001


def check_svd_rank(layer, rank, method, name=None):
    """The SVD of an out x in matrix has min(in, out) singular values: r can be at most that."""
    largest = min(layer.in_features, layer.out_features)
    if rank > largest:
        raise LoraxsError(
            (f"{name}: " if name else "") + f"{method} rank {rank} is too large for a {layer.out_features} x "
            f"{layer.in_features} layer: its SVD has only {largest} singular values; choose rank <= {largest}"
        )


def check_svd_ranks(layers, rank, method):
    """check_svd_rank for every target layer (name -> nn.Linear): what LoRA-XS, TinyLoRA and LoRA-SB check."""
    for name, layer in layers.items():
        check_svd_rank(layer, rank, method, name)


def warn_about_narrow_gaps(adapters):
    """One warning naming the layers (name -> adapter) whose σ_r / σ_{r+1} is so close to 1 that it is ill-defined."""
    narrow = [name for name, adapter in adapters.items() if adapter.gap < NARROW_GAP]
    if narrow:
        warnings.warn(  # said once per message: Python shows a repeated warning only the first time
            f"in {len(narrow)} of {len(adapters)} layers (first: {narrow[0]}) the r-th and (r+1)-th singular values "
            f"are nearly equal (σ_r / σ_(r+1) < {NARROW_GAP}), so rounding decides which of the two directions is "
            "frozen. Training is not affected. Loading the adapter file on another machine may rebuild the other "
            "direction, and loading then refuses the file; to make it load anywhere, store the frozen matrices too "
            "(train.py --save-frozen, save_adapters(..., frozen=True)). Otherwise there is nothing to do.",
            stacklevel=5,  # past this function, adapt(), tqdm and add_adapters: the line that added the adapters
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
