"""
LoRA: Low-Rank Adaptation (Hu et al., 2021, arXiv 2106.09685).

    y = W x + (alpha / r) B A x

    W  out x in   frozen pretrained weight
    A  r x in     trained, Kaiming-uniform at the start
    B  out x r    trained, zero at the start, so ΔW = B A = 0 and the
                  adapted model starts exactly as the pretrained one

The hypothesis: the change that fine-tuning needs has low "intrinsic rank",
so ΔW = B A with r much smaller than in and out is enough. Trainable
parameters per layer: r (in + out). For GPT-2's c_attn (768 -> 2304) at r = 8
that is 24,576 instead of 1,769,472.

Its defaults, where they come from and how its rates were chosen: docs/methods.md.
"""

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..errors import LoraxsError
from .base import AdaptedLinear, new_parameter


class LoRALinear(AdaptedLinear):
    def __init__(self, base, rank, alpha, dropout=0.0, generator=None):
        super().__init__(base, rank, dropout)
        self.scaling = alpha / rank
        A = torch.empty(rank, self.in_features)
        nn.init.kaiming_uniform_(A, a=math.sqrt(5), generator=generator)  # nn.Linear's own initialisation
        self.A = new_parameter(A, like=base.weight)  # r x in
        self.B = new_parameter(torch.zeros(self.out_features, rank), like=base.weight)  # out x r

    def update(self, x):
        # x (..., in) -> A x (..., r) -> B A x (..., out). The scale multiplies the r-wide middle, not the out-wide end.
        return F.linear(F.linear(x, self.A) * self.scaling, self.B)

    def delta_weight(self):
        return self.scaling * self.B @ self.A  # (out x r)(r x in) = out x in

    def lora_factors(self):
        return self.A.detach(), self.scaling * self.B.detach()  # A' = A, B' = (alpha / r) B

    # What the registry needs (base.py's table).
    name, display_name = "lora", "LoRA"
    default_rank = 8  # PEFT's LoraConfig (r = 8)
    learning_rates = {1: 3e-4, 2: 3e-4, 4: 3e-4, 8: 1e-3, 16: 1e-3}  # docs/defaults.md

    @classmethod
    def default_alpha(cls, rank):
        return 8.0  # PEFT's lora_alpha = 8; LoRA's authors set alpha to the first r they tried and kept it

    @classmethod
    def check_layers(cls, layers, config):
        for name, layer in layers.items():
            largest = min(layer.in_features, layer.out_features)
            if config.rank > largest:  # ΔW = B A has rank <= min(in, out) whatever r is
                raise LoraxsError(
                    f"{name}: LoRA rank {config.rank} is more than a {layer.out_features} x {layer.in_features} "
                    f"layer can use (B A has rank at most {largest}); choose rank <= {largest}"
                )
