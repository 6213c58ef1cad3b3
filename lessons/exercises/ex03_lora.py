"""
Exercises for lesson 03: LoRA.

Complete each function where it says TODO, then check your work:

    python lessons/check.py 03
"""

import torch  # noqa: F401 (you will need these)
import torch.nn.functional as F  # noqa: F401


def lora_forward(x, W, b, A, B, alpha):
    """
    The output of a LoRA layer: y = W x + b + (alpha / r) B A x, for x of shape (..., in).
    W is out x in, b has out numbers, A is r x in, B is out x r (so r = A.shape[0]).
    Compute the update on the activations, without forming B A.
    """
    raise NotImplementedError("TODO")


def merged_weight(W, A, B, alpha):
    """The weight W' that makes a plain linear layer compute what the LoRA layer computes."""
    raise NotImplementedError("TODO")


def lora_fit_error(target, rank, steps=1000, learning_rate=1e-2, seed=0):
    """
    An experiment: what can a rank-r update reach?

    Train a LoRA pair to match `target` (out x in): A (r x in) starts small and random (seed the
    generator with `seed`), B (out x r) starts at zero, as in LoRA; `steps` Adam steps at
    `learning_rate` minimise ||B A - target||² (Frobenius). Return the relative error
    ||B A - target|| / ||target|| after training, as a float.

    Try it on a rank-2 target at rank 1 and at rank 2. Before you run it, predict the rank-1 error
    from the target's singular values (lesson 05 names the theorem).
    """
    raise NotImplementedError("TODO")
