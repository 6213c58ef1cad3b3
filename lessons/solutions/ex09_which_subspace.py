"""Reference solutions for lesson 09. Try lessons/exercises/ex09_which_subspace.py first!"""

import torch


def captured_share(delta, U, V):
    return ((U.T @ delta @ V).norm() ** 2 / delta.norm() ** 2).item()  # M = Uᵀ ΔW V is the best r x r matrix


def first_step_update(model, inputs, targets, name, learning_rate):
    weight = model.get_submodule(name).weight
    _, loss = model(inputs, targets)
    (gradient,) = torch.autograd.grad(loss, [weight])  # this weight only; nothing lands in any .grad
    return -learning_rate * gradient.sign()  # Adam's first step: m / sqrt(v) = g / |g|


def subspace_shares(delta, W, first_step, rank, seed):
    U_W, _, Vh_W = torch.linalg.svd(W, full_matrices=False)
    U_G, _, Vh_G = torch.linalg.svd(first_step, full_matrices=False)
    generator = torch.Generator().manual_seed(seed)
    U_random = torch.linalg.qr(torch.randn(W.shape[0], rank, generator=generator)).Q
    V_random = torch.linalg.qr(torch.randn(W.shape[1], rank, generator=generator)).Q
    return {
        "top": captured_share(delta, U_W[:, :rank], Vh_W[:rank].T),
        "random": captured_share(delta, U_random, V_random),
        "gradient": captured_share(delta, U_G[:, :rank], Vh_G[:rank].T),
    }


def first_step_effects(W, gradient, rank, learning_rate):
    U, S, Vh = torch.linalg.svd(W, full_matrices=False)
    pairs = {
        "top": (U[:, :rank], S[:rank, None] * Vh[:rank]),
        "bottom, top scale": (U[:, -rank:], S[:rank, None] * Vh[-rank:]),  # only the directions differ from top
        "bottom, own scale": (U[:, -rank:], S[-rank:, None] * Vh[-rank:]),  # and now the scale as well
    }
    effects = {}
    for name, (B, A) in pairs.items():
        R = -learning_rate * (B.T @ gradient @ A.T).sign()  # Adam's first step from R = 0: g / |g| = sign(g)
        delta = B @ R @ A  # out x in
        effects[name] = (delta.norm().item(), (gradient * delta).sum().item())
    return effects
