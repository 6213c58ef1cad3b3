"""
What LoRA, VeRA, LoRA-XS and TinyLoRA have in common: a frozen linear layer plus a
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

An adapter's own tensors are float32 whatever W's dtype. On a bfloat16 model
a bfloat16 adapter would lose its small steps: bf16 keeps 8 significant bits,
so 1.0 + 1e-3 rounds back to 1.0. The update is computed in float32 and cast
to the layer's dtype when it is added (PEFT does the same by default).
"""

import torch
import torch.nn as nn

ADAPTER_DTYPE = torch.float32


class AdaptedLinear(nn.Module):
    def __init__(self, base: nn.Linear, rank: int, dropout: float = 0.0):
        super().__init__()
        self.base = base.requires_grad_(False)  # W and b stay exactly as pretrained
        self.in_features, self.out_features = base.in_features, base.out_features
        self.rank = rank
        self.dropout = nn.Dropout(dropout)  # on the update's input only, as in the LoRA paper
        self.merged = False

    def forward(self, x):
        y = self.base(x)
        if self.merged:  # ΔW already lives inside W
            return y
        return y + self.update(self.dropout(x).to(ADAPTER_DTYPE)).to(y.dtype)  # float32 inside, W's dtype out

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
    """A trainable float32 tensor created on the CPU (for seeded generators), moved to the base layer's device."""
    return nn.Parameter(tensor.to(device=like.device, dtype=ADAPTER_DTYPE))
