"""
The checks of lesson 08 (TinyLoRA and the export): python lessons/check.py 08

Each check_<name> runs your function <name> from ex08_tinylora_and_export.py on fresh
inputs and compares it with an independent answer; its docstring is the hint
shown after a wrong attempt.
"""

import math

import torch

from check import close


def check_tinylora_R(module):
    """each P_i is weighted by its v_i and all of them are added up; torch.einsum or a loop"""
    torch.manual_seed(0)
    v, P = torch.randn(5), torch.randn(5, 3, 3)
    close(module.tinylora_R(v, P), sum(v[i] * P[i] for i in range(5)), "R")


def check_loraxs_as_lora(module):
    """
    write ΔW = scaling · B R A as a product of two factors: which side can take R and the scale without changing its
    shape?
    """
    torch.manual_seed(0)
    A, B, R = torch.randn(4, 10), torch.randn(12, 4), torch.randn(4, 4)
    A_lora, B_lora = module.loraxs_as_lora(A, B, R, 0.5)
    assert A_lora.shape == (4, 10) and B_lora.shape == (12, 4), "A' should be r x in and B' out x r"
    close(B_lora @ A_lora, 0.5 * B @ R @ A, "B' A'", atol=1e-5)


def check_tinylora_fit_error(module):
    """flatten each P_i into a column of an (r², u) matrix; least squares gives the best v; measure what is left"""
    r = 3
    target = torch.randn(r, r, generator=torch.Generator().manual_seed(8))
    errors = {}
    for u in range(1, r * r + 1):
        generator = torch.Generator().manual_seed(11)
        P = torch.normal(0.0, 1 / r**0.5, size=(u, r, r), generator=generator).reshape(u, r * r).T
        best = torch.linalg.lstsq(P, target.reshape(r * r, 1)).solution
        expected = ((P @ best).flatten() - target.flatten()).norm().item() / target.norm().item()
        errors[u] = module.tinylora_fit_error(target, u, seed=11)
        assert isinstance(errors[u], float), "return the relative error as a float"
        assert math.isclose(errors[u], expected, abs_tol=1e-4), f"u = {u}: {errors[u]:.4f}, expected {expected:.4f}"
    # What it measures: u random directions among r² = 9; every R is reached at u = r², none before.
    assert all(errors[u] > 1e-2 for u in range(1, r * r)) and errors[r * r] < 1e-4
    return "relative error by u: " + ", ".join(f"{u}: {errors[u]:.2f}" for u in errors)
