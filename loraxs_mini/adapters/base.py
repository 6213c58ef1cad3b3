"""
What LoRA, VeRA and LoRA-XS have in common: a frozen linear layer plus a
trainable low-rank update.

Each adapter wraps an existing `nn.Linear` (weight W, out x in; bias b):

    y = W x + b + ΔW x            ΔW = a low-rank, out x in matrix

and each adapter writes ΔW as a product of small matrices, so it never builds
the out x in matrix in the forward pass. It computes the update on the
activations instead, right to left (for LoRA: x -> A x -> B (A x)), which costs
r (in + out) multiply-adds per token instead of in x out.

A subclass provides two things, the two views of the same ΔW:
    update(x)       ΔW x, computed on activations   (training and plain use)
    delta_weight()  ΔW itself, out x in              (merging, and lessons)

`merge()` adds ΔW into W once, so inference costs exactly what the original
layer costs; `unmerge()` takes it out again. Both are explicit: training
mode, evaluation mode and merging are separate ideas.
"""

import torch
import torch.nn as nn

from ..errors import LoraxsError


def check_rank(rank):
    if not isinstance(rank, int) or rank < 1:
        raise LoraxsError(f"rank must be a positive whole number, got {rank!r}")


class AdaptedLinear(nn.Module):
    def __init__(self, base: nn.Linear, rank: int, dropout: float = 0.0):
        super().__init__()
        check_rank(rank)
        self.base = base.requires_grad_(False)  # W and b stay exactly as pretrained
        self.in_features, self.out_features = base.in_features, base.out_features
        self.rank = rank
        self.dropout = nn.Dropout(dropout)  # on the update's input only, as in the LoRA paper
        self.merged = False

    def forward(self, x):
        y = self.base(x)
        if self.merged:  # ΔW already lives inside W
            return y
        return y + self.update(self.dropout(x))

    def update(self, x):
        """ΔW x for x (..., in) -> (..., out), without forming ΔW."""
        raise NotImplementedError

    def delta_weight(self):
        """ΔW, out x in."""
        raise NotImplementedError

    @torch.no_grad()
    def merge(self):
        """W <- W + ΔW. Forward then costs one matrix product, like the original layer."""
        if not self.merged:
            self.base.weight += self.delta_weight().to(self.base.weight.dtype)
            self.merged = True

    @torch.no_grad()
    def unmerge(self):
        """W <- W - ΔW. Exact up to floating-point rounding (W + ΔW - ΔW need not equal W bit for bit)."""
        if self.merged:
            self.base.weight -= self.delta_weight().to(self.base.weight.dtype)
            self.merged = False

    def extra_repr(self):
        return f"in={self.in_features}, out={self.out_features}, rank={self.rank}, merged={self.merged}"


def new_parameter(tensor, like):
    """A trainable tensor created on the CPU (for seeded generators), moved to where the base layer lives."""
    return nn.Parameter(tensor.to(device=like.device, dtype=like.dtype))
