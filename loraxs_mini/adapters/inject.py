"""
Putting adapters into a model, counting what trains, and taking them out again.

`add_adapters(model, "loraxs", rank=8)` finds the target `nn.Linear` layers
by name, replaces each with its adapter wrapper (the wrapper holds the
original layer), and freezes every other parameter. The model's own code is
never edited: only its modules are swapped.

    method   what trains                              per adapted layer (in -> out)
    none     nothing (the pretrained model, zero-shot)
    full     every parameter of the model
    lora     A (r x in) and B (out x r)                r (in + out)
    vera     d (r) and b (out)                        r + out
    loraxs   R (r x r)                                r²
"""

import fnmatch

import torch
import torch.nn as nn
from tqdm import tqdm

from ..errors import LoraxsError
from .base import AdaptedLinear, check_rank
from .lora import LoRALinear
from .loraxs import LoRAXSLinear, check_loraxs_rank
from .svd import SVD_METHODS
from .vera import VeRALinear, VeRAProjections

METHODS = ("none", "full", "lora", "vera", "loraxs")
ADAPTER_METHODS = ("lora", "vera", "loraxs")
DEFAULT_TARGETS = ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj")  # every linear layer of every block
DEFAULT_ALPHA = 8.0  # LoRA's authors set alpha to the first rank they tried and kept it; scaling = alpha / r


def name_matches(name, pattern):
    """Does `pattern` match the whole name, or its end from some dot on? Shell wildcards (* ?) allowed."""
    parts = name.split(".")
    return any(fnmatch.fnmatchcase(".".join(parts[i:]), pattern) for i in range(len(parts)))


def find_targets(model, patterns=DEFAULT_TARGETS):
    """
    The linear layers (name -> module) that some pattern names: "attn.c_attn"
    and "c_fc" match the end of a name, "mlp.*" every MLP layer,
    "transformer.h.0.*" the first block. The tied output head is never a target.
    """
    linears = {
        name: module
        for name, module in model.named_modules()
        if isinstance(module, (nn.Linear, AdaptedLinear)) and name != "lm_head" and not name.endswith(".base")
    }
    chosen = set()
    for pattern in patterns:
        matches = {name for name in linears if name_matches(name, pattern)}
        if not matches:
            raise LoraxsError(
                f"the target {pattern!r} matches no linear layer of this model; use the end of a layer's "
                f"name, such as {', '.join(DEFAULT_TARGETS)}, or a pattern like 'transformer.h.0.*'"
            )
        chosen |= matches
    return {name: module for name, module in linears.items() if name in chosen}  # in the model's order


def add_adapters(model, method, rank=8, targets=None, alpha=None, dropout=0.0, seed=0, svd="gram", progress=False):
    """
    Wrap the target layers of `model` with `method`'s adapter and freeze the rest.
    Returns the same model (changed in place). `progress` shows a bar over the
    layers: LoRA-XS computes an SVD for each (seconds for GPT-2, minutes for gpt2-xl on a CPU).
    """
    if method not in METHODS:
        raise LoraxsError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
    if adapted_layers(model) or getattr(model, "adapter_config", None):
        raise LoraxsError("this model already has adapters; start from a fresh model to add others")
    if svd not in SVD_METHODS:
        raise LoraxsError(f"unknown SVD method {svd!r}; choose one of {', '.join(SVD_METHODS)}")
    targets = list(targets or DEFAULT_TARGETS)
    alpha = DEFAULT_ALPHA if alpha is None else float(alpha)
    layers = find_targets(model, targets) if method in ADAPTER_METHODS else {}
    # Check everything before changing anything: after an error the model is exactly as it was.
    if layers:
        check_rank(rank)
    if method == "loraxs":
        for name, layer in layers.items():
            try:
                check_loraxs_rank(layer, rank)
            except LoraxsError as error:
                raise LoraxsError(f"{name}: {error}") from None

    model.requires_grad_(method == "full")  # adapters bring their own trainable tensors; all else is frozen
    model.adapter_config = dict(
        method=method, rank=rank, alpha=alpha, targets=targets, dropout=dropout, seed=seed, svd=svd
    )
    generator = torch.Generator().manual_seed(seed)  # initial A (LoRA) and R (LoRA-XS): seeded, like VeRA's pair
    if method == "vera":  # one random pair, large enough for every layer
        first = next(iter(layers.values()))
        max_in = max(layer.in_features for layer in layers.values())
        max_out = max(layer.out_features for layer in layers.values())
        projections = VeRAProjections(rank, max_in, max_out, seed, like=first.weight)
    bar = tqdm(layers.items(), desc=f"adding {method}", disable=not progress, leave=False, dynamic_ncols=True)
    for name, layer in bar:
        if method == "lora":
            adapter = LoRALinear(layer, rank, alpha, dropout, generator)
        elif method == "vera":
            adapter = VeRALinear(layer, projections, dropout)
        else:
            adapter = LoRAXSLinear(layer, rank, alpha, dropout, generator, svd)
        parent_name, _, child_name = name.rpartition(".")
        setattr(model.get_submodule(parent_name), child_name, adapter)
    return model


def adapted_layers(model):
    """name -> adapter, for every adapted layer of the model."""
    return {name: module for name, module in model.named_modules() if isinstance(module, AdaptedLinear)}


def merge_adapters(model):
    """
    Fold every adapter into its layer (W <- W + ΔW) and put the plain
    `nn.Linear` back: the result is an ordinary GPT that `save_pretrained`
    can write and that runs exactly as fast as the original.
    """
    for name, adapter in adapted_layers(model).items():
        adapter.merge()
        parent_name, _, child_name = name.rpartition(".")
        setattr(model.get_submodule(parent_name), child_name, adapter.base)
    if hasattr(model, "adapter_config"):
        del model.adapter_config
    return model


def parameter_counts(model):
    """
    (trainable, base): the parameters that train, and the size of the model
    without its adapters (the tied head counted once), so trainable / base is
    the share of GPT-2 being trained.
    """
    adapter_parameters = {
        id(parameter)
        for adapter in adapted_layers(model).values()
        for name, parameter in adapter.named_parameters()
        if not name.startswith("base.")
    }
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    base = sum(p.numel() for p in model.parameters() if id(p) not in adapter_parameters)
    return trainable, base


def describe_parameters(model):
    trainable, base = parameter_counts(model)
    return f"{trainable:,} trainable parameters, {100 * trainable / base:.4g}% of the model's {base:,}"
