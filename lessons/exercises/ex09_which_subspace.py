"""
Exercises for lesson 09: which subspace?

Complete each function where it says TODO, then check your work:

    python lessons/check.py 09
"""

import torch  # noqa: F401 (you will need it)


def captured_share(delta, U, V):
    """
    The share of an update ΔW (`delta`, out x in) that LoRA-XS can hold when its B spans the columns of U
    (out x r) and its A the columns of V (in x r), both with orthonormal columns: ||Uᵀ ΔW V||² / ||ΔW||²,
    squared Frobenius norms. Return a float between 0 and 1.
    """
    raise NotImplementedError("TODO")


def first_step_update(model, inputs, targets, name, learning_rate):
    """
    LoRA-SB's estimate of full fine-tuning's first update of the weight W of the layer called `name`
    (model.get_submodule(name)): Adam's first step, -learning_rate · sign(dL/dW), where L is the model's
    mean loss on (inputs, targets): `_, loss = model(inputs, targets)`.

    Return a tensor of W's shape (out x in). Leave the model as you found it: no gradient left in any .grad,
    and every requires_grad as it was.
    """
    raise NotImplementedError("TODO")


def subspace_shares(delta, W, first_step, rank, seed):
    """
    An experiment: how much of a fine-tuning update ΔW (`delta`) can each frozen subspace hold?

    Build three pairs (U, V) of r = `rank` orthonormal columns, out x r and in x r:
        "top"       U_r and V_r of the SVD of W (torch.linalg.svd; V_r are the first r rows of Vh, transposed)
        "random"    from a torch.Generator seeded with `seed`: the Q of torch.linalg.qr of a torch.randn(out, r)
                    matrix, then the same for a torch.randn(in, r) matrix, drawn in that order
        "gradient"  U_r and V_r of the SVD of `first_step` (full fine-tuning's first update, as LoRA-SB takes it)
    and return {"top": share, "random": share, "gradient": share} with captured_share.

    Before you run it: which holds most of ΔW, and which least?
    """
    raise NotImplementedError("TODO")


def first_step_effects(W, gradient, rank, learning_rate):
    """
    An experiment: directions or scale? LoRA-XS's frozen pair (B, A) has both, and the paper's own control (its
    code's bottom pair) changes them at once. Separate them with one step of training.

    Build three pairs from the SVD of W = U Σ Vᵀ (torch.linalg.svd; singular values largest first):
        "top"                B = U_r (the first r columns),  A = Σ_r V_rᵀ                         LoRA-XS
        "bottom, top scale"  B = the last r columns of U,    A = Σ_r (the top r values) x the last r rows of Vᵀ
        "bottom, own scale"  B = the last r columns of U,    A = the last r values x the last r rows of Vᵀ
    For each, take Adam's first step on R from R = 0: dL/dR = Bᵀ G Aᵀ with G = `gradient` (dL/dW, out x in), and
    Adam's first step is R = -learning_rate · sign(dL/dR). Then ΔW = B R A.

    Return {pair: (size, loss_change)} with size = ||ΔW|| (Frobenius) and loss_change = <G, ΔW> = Σ G_ij ΔW_ij,
    the first-order change of the loss that step makes (negative: the loss falls). Both as floats.

    Before you run it: which pair's step is smallest? Which one lowers the loss least for its size?
    """
    raise NotImplementedError("TODO")
