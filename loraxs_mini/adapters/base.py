"""
What every method shares: a frozen linear layer plus a trainable low-rank update, and the few names a method says.

Each adapter wraps an existing `nn.Linear` (weight W, out x in; bias b):

    y = W x + b + ΔW x            ΔW = a low-rank, out x in matrix

and writes ΔW as a product of small matrices, so the forward pass never builds the out x in matrix: it computes
the update on the activations, right to left (LoRA: x -> A x -> B (A x)), r (in + out) multiply-adds per token
instead of in x out. `merge()` adds ΔW into W once, so inference costs what the original layer costs; `unmerge()`
takes it out again.

The contract. A method is one class in one file; register() (registry.py) checks what is required.

    member                      required?   default                          read by
    name                        yes                                          --method, the registry, file names
    default_rank                yes                                          AdapterConfig, when no rank is given
    __init__(base, rank, ...)   yes                                          add_adapters, once per target layer
    update(x)                   yes                                          forward: ΔW x, on activations
    delta_weight()              yes                                          merge, unmerge, the lessons
    display_name                            name                             prose, tables, errors
    learning_rates                          {}: train.py asks for --lr       recipe.py (rank -> rate)
    default_alpha(rank)                     rank (alpha / r = 1)             AdapterConfig, if __init__ takes alpha
    settings                                {}                               AdapterConfig, files, train.py flags
    check_settings, check_layers            accept all                       AdapterConfig, add_adapters
    adapt(layers, config, build)            one cls(base, ...) per layer     add_adapters
    lora_factors()                          from the SVD of delta_weight()   the export to PEFT
    check_frozen(frozen)                    accept all                       loading a file that stores them
    peft_format(layers, config)             None: exported as a LoRA         the export to PEFT
    run_label, learning_rates_for           name; learning_rates             run names; a setting's own rates
    needs_first_step, stores_frozen         False                            add_adapters; adapter files

The default `adapt` fills `__init__`'s parameters by name: `base` the layer, then any of rank, alpha, dropout,
seed, svd and the method's own settings (from the AdapterConfig), `generator` (one stream seeded with the config's
seed, drawn from layer after layer), `layer_seed` (the seed plus the layer's index among the targets) and
`triplets` (the SVD of W, computed once for a whole sweep; a method that asks for it is one `uses_svd`). A method
takes alpha (and --alpha) exactly when its `__init__` has a parameter of that name. What a method needs beyond its
layer reaches `adapt` in one `Build`: the SVD cache, LoRA-SB's first step; a future need is a new field there.

An adapter's own tensors are float32 whatever W's dtype: on a bfloat16 model a bf16 adapter would lose its small
steps (bf16 keeps 8 significant bits: 1.0 + 1e-3 rounds back to 1.0). The update is computed in float32, added to
the layer's output in float32, and the sum rounded to the layer's dtype once, as PEFT's LoRA does
(peft/tuners/lora/layer.py, Linear.forward).
"""

import inspect
from typing import Any, Callable, NamedTuple

import torch
import torch.nn as nn

ADAPTER_DTYPE = torch.float32
PEFT_PREFIX = "base_model.model."  # what PEFT puts in front of a layer's name in its adapter files
OFFERED = ("rank", "alpha", "dropout", "seed", "svd", "generator", "layer_seed", "triplets")  # to __init__, by name


def init_parameters(method):
    """The names a method's `__init__` takes after the layer (`base`): what the default adapt offers it."""
    names = list(inspect.signature(method.__init__).parameters)
    return names[2:] if names[1:2] == ["base"] else []  # none and full wrap no layer: nothing


class Setting(NamedTuple):
    """A setting of one method alone (LoRA-XS's subspace): its default, the flag's help, and its values if few."""

    default: Any
    help: str
    choices: tuple | None = None


class FirstStep(NamedTuple):
    """
    Full fine-tuning's first step, for a method built from it (LoRA-SB): `loss()` runs the model on the first
    training batch and returns its mean loss; `learning_rate` is the rate of that step.
    """

    loss: Callable[[], torch.Tensor]
    learning_rate: float


class Build(NamedTuple):
    """What adding adapters offers a method beyond its layers and config."""

    svd_cache: Any = None  # an SVDCache (svd.py): each W's SVD once for a sweep, for a method that uses_svd
    first_step: FirstStep | None = None  # for a method that needs_first_step


class Method:
    """A fine-tuning method, as train.py, the comparison, adapter files and the export know it: class attributes."""

    name = ""
    display_name = ""  # "": the name
    default_rank = None  # None: the method has no rank (none, full)
    learning_rates = {}  # rank -> the rate chosen on validation (docs/defaults.md); None: the method has no rank
    settings = {}  # name -> Setting: the AdapterConfig settings of this method alone (TinyLoRA: u, weight_tying)
    trains = True  # False: nothing is trained, the base model is scored as it is (none)
    trains_base = False  # True: the base model's own weights train, not added tensors (full)
    needs_first_step = False  # True: built from full fine-tuning's first step (LoRA-SB)
    stores_frozen = False  # True: its frozen tensors come from data, not from W or a seed: files always store them

    def __init_subclass__(cls, **kwargs):
        """What a class's own code says about it: its display name, whether it has alpha, whether it uses the SVD."""
        super().__init_subclass__(**kwargs)
        if "display_name" not in cls.__dict__:
            cls.display_name = cls.name
        parameters = init_parameters(cls)
        cls.has_alpha, cls.uses_svd = "alpha" in parameters, "triplets" in parameters

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
        """alpha when none is given, for a method whose __init__ takes alpha: r, so that alpha / r = 1."""
        return float(rank)

    @classmethod
    def check_settings(cls, config):
        """Refuse settings this method cannot take, beyond a Setting's choices. Called by AdapterConfig."""

    @classmethod
    def check_layers(cls, layers, config):
        """Refuse target layers (name -> nn.Linear) the method cannot adapt at config's rank. Changes nothing."""

    @classmethod
    def adapt(cls, layers, config, build):
        """(name, adapter) for every target layer, in order; __init__'s parameters given by name (above)."""
        generator = torch.Generator().manual_seed(config.seed)  # one stream, drawn from layer after layer
        wanted = [name for name in init_parameters(cls) if name in OFFERED or name in cls.settings]
        for index, (name, layer) in enumerate(layers.items()):
            offered = {"generator": generator, "layer_seed": config.seed + index, "triplets": None}
            if "triplets" in wanted and build.svd_cache is not None:  # this W's SVD, computed once for a sweep
                offered["triplets"] = build.svd_cache.get(name, layer.weight, config.svd)
            yield name, cls(layer, **{p: offered[p] if p in offered else getattr(config, p) for p in wanted})


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
        (A', B'), r x in and out x r, with B' A' = ΔW: every adapter is a LoRA in disguise, and this is its LoRA
        form (what export.py hands to PEFT as a plain LoRA with scale 1). By default from the SVD of ΔW, whose rank
        is at most r: A' = V_rᵀ, B' = U_r Σ_r, exact up to rounding; a method that has its factors says them.
        """
        with torch.no_grad():
            U, S, Vh = torch.linalg.svd(self.delta_weight().double(), full_matrices=False)
            kept = min(self.rank, len(S))  # r may exceed min(in, out) (VeRA): the rest of the rank is zero
            A, B = torch.zeros(self.rank, self.in_features), torch.zeros(self.out_features, self.rank)
            A[:kept], B[:, :kept] = Vh[:kept], U[:, :kept] * S[:kept]
            return A.to(self.base.weight.device), B.to(self.base.weight.device)

    @classmethod
    def check_frozen(cls, frozen):
        """
        What one layer's frozen tensors (name -> tensor, as a file stores them) must satisfy, beyond their checksums:
        a problem in words, or None. Loading refuses a file whose frozen tensors break it.
        """
        return None

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
