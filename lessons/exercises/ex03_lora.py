"""
Exercises for lesson 03: LoRA.

Complete each function where it says TODO, then check your work:

    python -m loraxs_mini.check 03
"""

import torch.nn.functional as F  # noqa: F401 (you will need it)


def lora_parameter_count(in_features, out_features, rank):
    """How many numbers does LoRA train for one in -> out layer at rank r?"""
    raise NotImplementedError("TODO")


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
