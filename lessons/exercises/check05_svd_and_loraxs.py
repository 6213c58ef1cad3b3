"""
The checks of lesson 05 (SVD and LoRA-XS): python lessons/check.py 05

Each check_<name> runs your function <name> from ex05_svd_and_loraxs.py on fresh
inputs and compares it with an independent answer; its docstring is the hint
shown after a wrong attempt.
"""

import math

import numpy as np
import torch

from check import close
from loraxs_mini.adapters import LoRAXSLinear


def decaying_matrix(out_features=30, in_features=20):
    U, _ = torch.linalg.qr(torch.randn(out_features, in_features))
    V, _ = torch.linalg.qr(torch.randn(in_features, in_features))
    return (U * torch.arange(1, in_features + 1) ** -0.7) @ V.T


def check_best_rank_r(module):
    """Eckart-Young: keep the r largest singular values and their vectors, then multiply back"""
    W, r = decaying_matrix(), 4
    approximation = module.best_rank_r(W, r)
    singular_values = np.linalg.svd(W.double().numpy(), compute_uv=False)
    assert approximation.shape == W.shape, f"the approximation should have W's shape {tuple(W.shape)}"
    assert torch.linalg.matrix_rank(approximation, atol=1e-4) <= r, f"the approximation has rank above {r}"
    error = (W - approximation).double().square().sum().item()
    assert math.isclose(error, float(np.sum(singular_values[r:] ** 2)), rel_tol=1e-3), (
        "not the best rank-r approximation"
    )


def check_loraxs_init(module):
    """the same SVD as best_rank_r; B keeps the left singular vectors, A everything else of the product"""
    W, r = decaying_matrix(), 4
    B, A = module.loraxs_init(W, r)
    assert B.shape == (30, r) and A.shape == (r, 20), "B should be out x r and A r x in"
    close(B.T @ B, torch.eye(r), "B's columns should be orthonormal: BᵀB", atol=1e-4)
    base = torch.nn.Linear(20, 30)
    with torch.no_grad():
        base.weight.copy_(W)
    reference = LoRAXSLinear(base, rank=r, alpha=r)
    close(B @ A, reference.B @ reference.A, "B A (the best rank-r approximation of W)", atol=1e-4)


def check_loraxs_start_shift(module):
    """build B and A as in loraxs_init, form the update B R A, and compare its Frobenius norm with W's"""
    W, rank = decaying_matrix(), 4
    singular_values = torch.linalg.svdvals(W)
    with_identity = module.loraxs_start_shift(W, rank, torch.eye(rank))
    expected = (singular_values[:rank].norm() / singular_values.norm()).item()  # R = I adds W's best rank-r part
    assert math.isclose(with_identity, expected, rel_tol=1e-3), (
        f"R = I: got {with_identity:.4f}, expected {expected:.4f}"
    )
    small = module.loraxs_start_shift(W, rank, 1e-5 * torch.randn(rank, rank))
    assert small < 1e-4, f"R ~ 1e-5: the weight moved by {small:.2e}, expected next to nothing"
    # Against the reference B and A, with an R that tells B = U_r, A = Σ_r V_rᵀ apart from other splits of W_r.
    base = torch.nn.Linear(20, 30)
    with torch.no_grad():
        base.weight.copy_(W)
    reference = LoRAXSLinear(base, rank=rank, alpha=rank)
    R = torch.randn(rank, rank, generator=torch.Generator().manual_seed(5))
    expected = ((reference.B @ R @ reference.A).norm() / W.norm()).item()
    measured = module.loraxs_start_shift(W, rank, R)
    assert math.isclose(measured, expected, rel_tol=1e-3), (
        f"a random R: got {measured:.4f}, expected {expected:.4f}; are B and A the ones loraxs_init should build?"
    )
    return f"R = I moves W by {with_identity:.2f} of its norm, R ~ 1e-5 by {small:.1e}"
