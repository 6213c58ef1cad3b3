"""
What every method has in common, and what LoRA, VeRA, LoRA-XS and TinyLoRA
share: a frozen linear layer plus a trainable low-rank update.

`Method` is what the registry (registry.py) knows of a fine-tuning method:
its name, its defaults, the checks of its settings, how it is added to a
model. A method is one class, in one file, that says all of it; nothing
outside this folder asks for a method by name.

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
so 1.0 + 1e-3 rounds back to 1.0. The update is computed in float32, added to
the layer's output in float32, and the sum is rounded to the layer's dtype
once, as PEFT's LoRA does (peft/tuners/lora/layer.py, Linear.forward:
`result = result + lora_B(lora_A(x)) * scaling`, then
`result.to(torch_result_dtype)`). Rounding the update first and then the sum
would round twice.
"""

from typing import Callable, NamedTuple

import torch
import torch.nn as nn

ADAPTER_DTYPE = torch.float32
PEFT_PREFIX = "base_model.model."  # what PEFT puts in front of a layer's name in its adapter files


class Method:
    """
    A fine-tuning method, as train.py, the comparison, adapter files and the export know it. Every setting below
    is a class attribute or class method, so the registry holds classes, not objects.
    """

    name = ""  # as typed on the command line: train.py --method NAME
    display_name = ""  # as written in prose and tables
    default_rank = None  # None: the method has no rank (none, full)
    has_alpha = False  # is the update scaled by alpha / r?
    learning_rates = {}  # rank -> the rate chosen on validation (docs/defaults.md); None: the method has no rank
    settings = {}  # AdapterConfig fields of this method alone, with their defaults (TinyLoRA: u, weight_tying)
    trains = True  # False: nothing is trained, the base model is scored as it is
    trains_base = False  # True: the base model's own weights train (full fine-tuning), not added tensors
    uses_svd = False  # True: built from the SVD of each W (LoRA-XS, TinyLoRA), which train.py computes once
    needs_first_step = False  # True: built from full fine-tuning's first step (LoRA-SB): add_adapters(first_step=...)
    stores_frozen = False  # True: its frozen tensors come from data, not from W or a seed: files always store them

    @classmethod
    def run_label(cls, config):
        """How a run's files name the method: its name, and a setting that tells runs apart (LoRA-XS's subspace)."""
        return cls.name

    @classmethod
    def learning_rates_for(cls, config=None):
        """The rates measured for config's own settings (LoRA-XS: its subspace's); None: for the defaults."""
        return cls.learning_rates

    @classmethod
    def default_alpha(cls, rank):
        """alpha when none is given (methods with has_alpha)."""
        return None

    @classmethod
    def check_settings(cls, config):
        """Refuse settings this method cannot take; fill in its own (`settings`). Called by AdapterConfig."""

    @classmethod
    def check_layers(cls, layers, config):
        """Refuse target layers (name -> nn.Linear) the method cannot adapt at config's rank. Changes nothing."""

    @classmethod
    def adapt(cls, layers, config, svd_cache=None, first_step=None):
        """
        (name, adapter) for every target layer, in order: what add_adapters puts in their places. `svd_cache`: the
        SVDs of W already computed (SVDCache); `first_step`: a FirstStep, for methods that need one.
        """
        return iter(())


class FirstStep(NamedTuple):
    """
    Full fine-tuning's first step, for a method built from it (LoRA-SB): `loss()` runs the model on the first
    training batch and returns its mean loss; `learning_rate` is the rate of that step.
    """

    loss: Callable[[], torch.Tensor]
    learning_rate: float


class AdaptedLinear(Method, nn.Module):
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
        return (y + self.update(self.dropout(x).to(ADAPTER_DTYPE))).to(y.dtype)  # a float32 sum, rounded once

    def update(self, x):
        """ΔW x for x (..., in) -> (..., out), without forming ΔW."""
        raise NotImplementedError

    def delta_weight(self):
        """ΔW, out x in."""
        raise NotImplementedError

    def lora_factors(self):
        """
        (A', B'), r x in and out x r, with B' A' = ΔW: every adapter here is a LoRA in disguise, and this is its
        LoRA form (what export.py hands to PEFT as a plain LoRA with scale 1).
        """
        raise NotImplementedError

    @classmethod
    def peft_format(cls, layers, config):
        """
        PEFT's own format for this method, if PEFT has it: (settings for adapter_config.json, tensors by name).
        None: the method goes out as a plain LoRA (lora_factors).
        """
        return None

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
