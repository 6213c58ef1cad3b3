"""
Exercises for lesson 05: the SVD and LoRA-XS.

Complete each function where it says TODO, then check your work:

    python lessons/check.py 05
"""

import torch  # noqa: F401 (you will need it)


def best_rank_r(W, r):
    """The best rank-r approximation of W (out x in), in the sense of the Frobenius norm."""
    raise NotImplementedError("TODO")


def loraxs_init(W, r):
    """LoRA-XS's frozen pair for the weight W: return (B, A) with B = U_r (out x r) and A = Σ_r V_rᵀ (r x in)."""
    raise NotImplementedError("TODO")


def loraxs_start_shift(W, rank, R):
    """
    An experiment: why does R start near zero?

    With B and A from loraxs_init(W, rank) and the scale 1 (alpha = r), the adapted weight is
    W' = W + B R A. Return how far that moves the weight, ||B R A|| / ||W|| (Frobenius), as a float.

    Measure it for R = torch.eye(rank) and for R = 1e-5 * torch.randn(rank, rank) (the LoRA-XS
    code's start). What would R = I do to the pretrained model before any training?
    """
    raise NotImplementedError("TODO")
