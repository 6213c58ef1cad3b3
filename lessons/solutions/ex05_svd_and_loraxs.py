"""Reference solutions for lesson 05. Try lessons/exercises/ex05_svd_and_loraxs.py first!"""

import torch


def best_rank_r(W, r):
    U, S, Vh = torch.linalg.svd(W, full_matrices=False)
    return U[:, :r] @ torch.diag(S[:r]) @ Vh[:r]


def loraxs_init(W, r):
    U, S, Vh = torch.linalg.svd(W, full_matrices=False)
    return U[:, :r], S[:r, None] * Vh[:r]  # B = U_r, A = Σ_r V_rᵀ


def loraxs_start_shift(W, rank, R):
    B, A = loraxs_init(W, rank)
    # R = I adds W's best rank-r part once more: the top r directions doubled, a different model.
    return ((B @ R @ A).norm() / W.norm()).item()
