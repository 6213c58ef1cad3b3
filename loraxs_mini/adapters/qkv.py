"""
GPT-2's fused attention input layer, seen as three layers: q, k and v.

GPT-2 computes queries, keys and values with one matrix, c_attn (3C x C):

    [q | k | v] = c_attn(x),      W_c_attn = [W_q; W_k; W_v]   (each C x C, stacked by rows)

An adapter on the fused matrix treats the three as one. For LoRA that is a
choice among others, but for LoRA-XS it decides what can be learned: the top-r
singular vectors of the stacked matrix lie mostly in the rows of W_q and W_k
(91-99.5% of their mass in every block of the small pretrained model, at
r = 8), so one SVD of c_attn leaves LoRA-XS little room to change the values.
The paper's code adapts q, k and v separately, each with its own SVD and its
own R. (Whether that matters is an experiment: on this project's two tasks
the fused layer did better; docs/defaults.md#at-the-default-ranks-lora-xss-layout-and-the-first-learning-rates.)

`SplitQKV` replaces c_attn with three C x C `nn.Linear` layers named q, k and
v, whose weights are the three row blocks of the fused weight (views: no copy,
no new numbers), and concatenates their outputs: the attention code, which
splits c_attn's output into thirds, runs unchanged. The adapters then wrap q,
k and v like any other linear layer. `fused()` stacks them back into one layer
for saving in GPT-2's own layout.

Why not separate q, k, v layers in the model itself? Then the fused layer,
which GPT-2 checkpoints store and PEFT adapts, could no longer be adapted as
one. The split is an option, not the model. (LoRA's own GPT-2 experiments did
neither: loralib's MergedLinear on c_attn with enable_lora=[True, False, True]
gives q and v a pair each and leaves k alone; microsoft/LoRA,
examples/NLG/src/model.py. targets=["attn.c_attn.q", "attn.c_attn.v"] is that
layout here.)
"""

import torch
import torch.nn as nn

PARTS = ("q", "k", "v")


class SplitQKV(nn.Module):
    def __init__(self, fused: nn.Linear):
        super().__init__()
        C = fused.in_features
        for index, name in enumerate(PARTS):
            rows = slice(index * C, (index + 1) * C)  # W_q is rows 0..C-1, W_k rows C..2C-1, W_v rows 2C..3C-1
            part = nn.Linear(C, C, bias=fused.bias is not None, device="meta")  # shapes only; real tensors below
            part.weight = nn.Parameter(fused.weight.detach()[rows], requires_grad=fused.weight.requires_grad)
            if fused.bias is not None:
                part.bias = nn.Parameter(fused.bias.detach()[rows], requires_grad=fused.bias.requires_grad)
            setattr(self, name, part)

    def forward(self, x):
        return torch.cat([self.q(x), self.k(x), self.v(x)], dim=-1)  # 3 x (B, T, C) -> (B, T, 3C), as c_attn

    def fused(self):
        """One 3C x C nn.Linear again: [W_q; W_k; W_v] and [b_q; b_k; b_v]."""
        parts = [getattr(self, name) for name in PARTS]
        C = parts[0].in_features
        has_bias = parts[0].bias is not None
        fused = nn.Linear(C, 3 * C, bias=has_bias, device="meta")
        fused.weight = nn.Parameter(torch.cat([p.weight.detach() for p in parts]), requires_grad=False)
        if has_bias:
            fused.bias = nn.Parameter(torch.cat([p.bias.detach() for p in parts]), requires_grad=False)
        return fused
