"""
The checks of lesson 09 (which subspace?): python lessons/check.py 09

Each check_<name> runs your function <name> from ex09_which_subspace.py on fresh
inputs and compares it with an independent answer; its docstring is the hint
shown after a wrong attempt.
"""

import copy
import math

import numpy as np
import torch

from check import close, tiny_model
from loraxs_mini.adapters import add_adapters, find_targets
from loraxs_mini.adapters.base import FirstStep
from loraxs_mini.adapters.lorasb import first_update

LAYER = "transformer.h.0.mlp.c_fc"  # 128 x 32 in the tiny model


def random_batch(seed):
    tokens = torch.randint(0, 1000, (4, 12), generator=torch.Generator().manual_seed(seed))
    return tokens, torch.roll(tokens, -1, dims=1)  # next-token prediction on random text


def check_captured_share(module):
    """project ΔW on both sides, Uᵀ ΔW V, and compare squared Frobenius norms; .item() makes a float"""
    delta = torch.randn(30, 20, generator=torch.Generator().manual_seed(3))
    U, S, Vh = torch.linalg.svd(delta, full_matrices=False)
    singular_values = np.linalg.svd(delta.double().numpy(), compute_uv=False)
    own = module.captured_share(delta, U[:, :4], Vh[:4].T)  # ΔW's own top 4 directions: Eckart-Young's share
    assert isinstance(own, float), "return the share as a float"
    expected = float(np.sum(singular_values[:4] ** 2) / np.sum(singular_values**2))
    assert math.isclose(own, expected, rel_tol=1e-4), f"ΔW's own top 4 directions: {own:.4f}, expected {expected:.4f}"
    assert module.captured_share(delta, U[:, 4:8], Vh[:4].T) < 1e-8, "directions orthogonal to ΔW's should hold 0"
    assert math.isclose(module.captured_share(3 * delta, U[:, :4], Vh[:4].T), own, rel_tol=1e-4), (
        "a share does not depend on ΔW's size"
    )


def check_first_step_update(module):
    """torch.autograd.grad(loss, [weight]) gives one gradient without touching .grad; then its sign, times -rate"""
    model, (inputs, targets) = tiny_model(), random_batch(5)
    reference = copy.deepcopy(model)
    expected = first_update(find_targets(reference, [LAYER]), FirstStep(lambda: reference(inputs, targets)[1], 2e-3))
    flags = {name: p.requires_grad for name, p in model.named_parameters()}
    got = module.first_step_update(model, inputs, targets, LAYER, 2e-3)
    close(got, expected[LAYER], "the first-step update", atol=1e-9)
    assert all(p.grad is None for p in model.parameters()), "a gradient was left in some .grad; clear it"
    assert flags == {name: p.requires_grad for name, p in model.named_parameters()}, "a requires_grad was changed"


def check_subspace_shares(module):
    """three (U, V) pairs, each of r orthonormal columns, then captured_share for each; follow the recipe's order"""
    model, (inputs, targets) = tiny_model(), random_batch(6)
    W = model.get_submodule(LAYER).weight.detach().clone()
    first_step = first_update(find_targets(model, [LAYER]), FirstStep(lambda: model(inputs, targets)[1], 1e-3))[LAYER]
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)  # full fine-tuning, 10 steps on this batch: its ΔW
    for _ in range(10):
        model(inputs, targets)[1].backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    delta = model.get_submodule(LAYER).weight.detach() - W
    rank, seed = 8, 7
    shares = module.subspace_shares(delta, W, first_step, rank, seed)
    assert isinstance(shares, dict) and set(shares) == {"top", "random", "gradient"}, "return top, random, gradient"

    def share(U, V):
        return ((U.T @ delta @ V).norm() ** 2 / delta.norm() ** 2).item()

    U_W, _, Vh_W = torch.linalg.svd(W, full_matrices=False)
    U_G, _, Vh_G = torch.linalg.svd(first_step, full_matrices=False)
    generator = torch.Generator().manual_seed(seed)
    random_pair = [torch.linalg.qr(torch.randn(n, rank, generator=generator)).Q for n in W.shape]
    expected = {"top": share(U_W[:, :rank], Vh_W[:rank].T), "random": share(*random_pair),
                "gradient": share(U_G[:, :rank], Vh_G[:rank].T)}  # fmt: skip
    for name, value in expected.items():
        assert math.isclose(shares[name], value, rel_tol=1e-3, abs_tol=1e-6), (
            f"{name}: {shares[name]:.4f}, expected {value:.4f}"
        )
    # What it measures: the first step points where the next nine go; W's own directions (of a random model here)
    # hold no more than chance, (r / out)(r / in) = 1.6%.
    chance = rank * rank / (W.shape[0] * W.shape[1])
    assert shares["gradient"] > 5 * max(shares["top"], shares["random"]), "the gradient subspace should hold most"
    assert shares["random"] < 4 * chance, "a random pair should hold about (r / out)(r / in) of ΔW"
    return ", ".join(f"{name} {value:.3f}" for name, value in shares.items()) + f" of ΔW (chance {chance:.3f})"


def check_first_step_effects(module):
    """B = U's columns, A = singular values x Vᵀ's rows; R = -rate · sign(Bᵀ G Aᵀ); ΔW = B R A; sum(G * ΔW)"""
    model, (inputs, targets) = tiny_model(), random_batch(8)
    W = model.get_submodule(LAYER).weight
    (gradient,) = torch.autograd.grad(model(inputs, targets)[1], [W])
    rank, rate = 4, 1e-2
    got = module.first_step_effects(W.detach().clone(), gradient.clone(), rank, rate)
    names = ("top", "bottom, top scale", "bottom, own scale")
    assert isinstance(got, dict) and set(got) == set(names), f"return a dict with the keys {', '.join(names)}"
    # The independent answer: LoRA-XS itself, with each pair, and one real Adam step on its R.
    for name, (subspace, scale) in zip(names, [("top", "top"), ("bottom", "top"), ("bottom", "own")]):
        adapted = add_adapters(copy.deepcopy(model), "loraxs", rank=rank, subspace=subspace, scale=scale)
        layer = adapted.get_submodule(LAYER)
        start = layer.delta_weight().detach()  # R starts as noise of 1e-5, not 0: take its ΔW out
        optimizer = torch.optim.Adam([layer.R], lr=rate)
        adapted(inputs, targets)[1].backward()
        optimizer.step()
        delta = (layer.delta_weight() - start).detach()
        size, loss_change = got[name]
        assert isinstance(size, float) and isinstance(loss_change, float), f"{name}: return two floats"
        assert math.isclose(size, delta.norm().item(), rel_tol=1e-2), (
            f"{name}: size {size:.4g}, expected {delta.norm().item():.4g}"
        )
        expected = (gradient * delta).sum().item()
        assert math.isclose(loss_change, expected, rel_tol=2e-2), (
            f"{name}: loss change {loss_change:.4g}, expected {expected:.4g}"
        )
    ratio = got["bottom, top scale"][0] / got["bottom, own scale"][0]
    return f"the bottom pair's step is {ratio:.1f}x larger at the top scale than at its own, here on a random model"
