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
