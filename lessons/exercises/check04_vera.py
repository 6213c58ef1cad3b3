"""
The checks of lesson 04 (VeRA): python lessons/check.py 04

Each check_<name> runs your function <name> from ex04_vera.py on fresh
inputs and compares it with an independent answer; its docstring is the hint
shown after a wrong attempt.
"""

import math

import torch

from check import close
from loraxs_mini.adapters import VeRALinear, VeRAProjections


def check_shared_pair(module):
    """
    one generator, seeded once, draws both matrices: their order and each one's fan_in matter (lesson 04 shows
    VeRAProjections)
    """
    for rank, max_in, max_out, seed in ((4, 10, 12, 0), (8, 768, 3072, 1234)):
        A, B = module.shared_pair(rank, max_in, max_out, seed)
        expected = VeRAProjections(rank, max_in, max_out, seed, like=torch.empty(0))
        close(A, expected.A, "A", atol=0)
        close(B, expected.B, "B", atol=0)


def check_vera_delta_weight(module):
    """
    b scales the rows of the update, d the rank dimension in the middle; broadcasting does both without building a
    diagonal matrix
    """
    projections = VeRAProjections(4, 10, 12, seed=0, like=torch.empty(0))
    layer = VeRALinear(torch.nn.Linear(10, 12), projections)
    with torch.no_grad():
        layer.lambda_b.normal_()
        layer.lambda_d.normal_()
        A, B = layer.shared_matrices()
        close(module.vera_delta_weight(A, B, layer.lambda_d, layer.lambda_b), layer.delta_weight(), "ΔW")


def check_vera_fit_error(module):
    """
    with b = 1 the update is a sum of r fixed rank-1 matrices weighted by d: make each one a column, and least
    squares finds the best weights
    """
    generator = torch.Generator().manual_seed(4)
    target = torch.randn(24, 4, generator=generator) @ torch.randn(4, 24, generator=generator)
    errors = {}
    for rank in (8, 256):
        projections = VeRAProjections(rank, 24, 24, seed=0, like=target)
        columns = torch.stack([torch.outer(projections.B[:, i], projections.A[i]).flatten() for i in range(rank)], 1)
        best = torch.linalg.lstsq(columns, target.flatten()[:, None]).solution
        expected = ((columns @ best).flatten() - target.flatten()).norm().item() / target.norm().item()
        errors[rank] = module.vera_fit_error(target, rank, seed=0)
        assert math.isclose(errors[rank], expected, abs_tol=1e-3), f"r={rank}: {errors[rank]:.4f}, not {expected:.4f}"
    # What it measures: r fixed random directions out of 24 x 24 = 576; the rank buys the expressiveness.
    assert errors[256] < errors[8] - 0.1
    return f"relative error at r = 8: {errors[8]:.3f}, at r = 256: {errors[256]:.3f}"
