"""Reference solutions for lesson 05. Try lessons/exercises/ex05_svd_and_loraxs.py first!"""

import torch


def best_rank_r(W, r):
    U, S, Vh = torch.linalg.svd(W, full_matrices=False)
    return U[:, :r] @ torch.diag(S[:r]) @ Vh[:r]


def loraxs_init(W, r):
    U, S, Vh = torch.linalg.svd(W, full_matrices=False)
    return U[:, :r], S[:r, None] * Vh[:r]  # B = U_r, A = Σ_r V_rᵀ


def loraxs_parameter_count(n_layer, adapted_per_block, rank):
    return n_layer * adapted_per_block * rank**2
