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
