"""
Exercises for lesson 01: the GPT-2 model.

Complete each function where it says TODO, then check your work:

    python lessons/check.py 01
"""

import math  # noqa: F401 (you will need it)

import torch  # noqa: F401


def causal_attention(q, k, v):
    """
    softmax(Q Kᵀ / sqrt(D) + M) V for q, k, v of shape (B, H, T, D), where M is -inf above the
    diagonal (token t may not look at tokens after t) and 0 elsewhere. Returns (B, H, T, D).
    Write it with plain tensor operations, without F.scaled_dot_product_attention.
    """
    raise NotImplementedError("TODO")


def gelu_tanh(x):
    """GPT-2's activation: 0.5 x (1 + tanh(sqrt(2 / pi) (x + 0.044715 x³))), elementwise."""
    raise NotImplementedError("TODO")


def position_sensitivity(model, idx, position):
    """
    An experiment: which positions does one token reach?

    Change the token at `position` in every row of idx (B, T) to (token + 1) % V, run the model on
    both versions, and return T numbers: at each position, the largest absolute change of any
    logit (over the batch and the vocabulary). Before you run it, predict which of the T numbers
    are zero. Return a tensor of shape (T,).
    """
    raise NotImplementedError("TODO")
