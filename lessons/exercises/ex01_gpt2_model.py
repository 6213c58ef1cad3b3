"""
Exercises for lesson 01: the GPT-2 model.

Complete each function where it says TODO, then check your work:

    python -m loraxs_mini.check 01
"""

import math  # noqa: F401 (you will need it)

import torch  # noqa: F401


def block_parameter_count(n_embd):
    """
    How many parameters does one GPT-2 block of width C = n_embd hold?

    Count the weight and bias of attn.c_attn (C -> 3C), attn.c_proj (C -> C), mlp.c_fc (C -> 4C),
    mlp.c_proj (4C -> C), and the two LayerNorms ln_1, ln_2 (a weight and a bias of C numbers each).
    For gpt2 (C = 768) the answer is 7,087,872.
    """
    raise NotImplementedError("TODO")


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
