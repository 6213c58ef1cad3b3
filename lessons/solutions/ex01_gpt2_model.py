"""Reference solutions for lesson 01. Try lessons/exercises/ex01_gpt2_model.py first!"""

import math

import torch


def block_parameter_count(n_embd):
    C = n_embd
    attention = (C * 3 * C + 3 * C) + (C * C + C)  # c_attn, attn.c_proj
    mlp = (C * 4 * C + 4 * C) + (4 * C * C + C)  # c_fc, mlp.c_proj
    layer_norms = 2 * (C + C)  # ln_1, ln_2: a weight and a bias each
    return attention + mlp + layer_norms  # = 12 C² + 13 C


def causal_attention(q, k, v):
    T, D = q.shape[-2], q.shape[-1]
    scores = q @ k.transpose(-2, -1) / math.sqrt(D)  # (B, H, T, T)
    future = torch.triu(torch.ones(T, T, dtype=torch.bool), diagonal=1)  # True above the diagonal
    scores = scores.masked_fill(future, float("-inf"))
    return torch.softmax(scores, dim=-1) @ v


def gelu_tanh(x):
    return 0.5 * x * (1 + torch.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3)))
