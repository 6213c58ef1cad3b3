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
    tinylora v (u), shared by a group of layers          u per group

Each method's default rank, alpha and target layers are in config.py.
"""

import fnmatch
import warnings

import torch
import torch.nn as nn
from tqdm import tqdm

from ..errors import LoraxsError
from .base import AdaptedLinear
from .config import ADAPTER_METHODS, EVERY_LINEAR, AdapterConfig
from .lora import LoRALinear
from .loraxs import LoRAXSLinear, check_loraxs_rank
from .qkv import PARTS, SplitQKV
from .tinylora import TinyLoRALinear, TinyLoRAVector, tinylora_groups
from .vera import VeRALinear, VeRAProjections

# Below this σ_r / σ_{r+1}, LoRA-XS's top-r subspace hangs on rounding. On the small pretrained model, the Gram
# route and the full float32 SVD disagreed on U_r by a sine of 1.4e-3 at a gap of 1.0003, by at most 4e-5 at
# every gap above 1.005: the disagreement grows roughly as 1 / (gap - 1).
NARROW_GAP = 1.001
MAX_VERA_PAIR_BYTES = 2**31  # 2 GiB; at rank 256, GPT-2 XL's pair is 256 x (6400 + 6400) x 4 bytes = 12.5 MiB
MAX_PROJECTION_BYTES = 2**31  # TinyLoRA's P, all layers together: 48 x 64 x 2 x 2 x 4 bytes = 48 KiB for GPT-2


def name_matches(name, pattern):
    """Does `pattern` match the whole name, or its end from some dot on? Shell wildcards (* ?) allowed."""
    parts = name.split(".")
    return any(fnmatch.fnmatchcase(".".join(parts[i:]), pattern) for i in range(len(parts)))


def find_targets(model, patterns=EVERY_LINEAR):
    """
    The linear layers (name -> nn.Linear) that some pattern names: "attn.c_attn"
    and "c_fc" match the end of a name, "mlp.*" every MLP layer,
    "transformer.h.0.*" the first block. "attn.c_attn.q" (or .k, .v) names
    one third of the fused c_attn, and "c_attn.*" all three (see qkv.py); a
    pattern that matches c_attn itself takes it whole, never its thirds. The
    tied output head is never a target. The model is not changed: the thirds
    of a c_attn not yet split are returned as views of its weight.
    """
    layers, thirds = {}, {}  # every layer a pattern may choose; thirds: "....c_attn.q" -> "....c_attn"
    for name, module in model.named_modules():
        if type(module) is nn.Linear and name != "lm_head":
            layers[name] = module
            if name.endswith("attn.c_attn"):
                split = SplitQKV(module)
                for part in PARTS:
                    layers[f"{name}.{part}"], thirds[f"{name}.{part}"] = getattr(split, part), name
    chosen = set()
    for pattern in patterns:
        matches = {name for name in layers if name_matches(name, pattern)}
        matches -= {third for third, fused in thirds.items() if fused in matches}  # c_attn matched: taken whole
        if not matches:
            raise LoraxsError(
                f"the target {pattern!r} matches no linear layer of this model; use the end of a layer's name, "
                "such as attn.c_attn, attn.c_attn.q (or .k, .v), attn.c_proj, mlp.c_fc, mlp.c_proj, or a pattern "
                "like 'transformer.h.0.*'"
            )
        chosen |= matches
    both = sorted(third for third, fused in thirds.items() if third in chosen and fused in chosen)
    if both:
        raise LoraxsError(
            f"the targets choose both {thirds[both[0]]} and its third {both[0]}; adapt the fused c_attn or its "
            "thirds q, k, v, not both"
        )
    return {name: layer for name, layer in layers.items() if name in chosen}


def add_adapters(model, config, *, progress=False, svd_cache=None, **settings):
    """
    Wrap the target layers of `model` with an adapter and freeze the rest.
    `config` is an AdapterConfig, or a method name with its settings as
    keywords: add_adapters(model, "loraxs", rank=8) is
    add_adapters(model, AdapterConfig("loraxs", rank=8)).

    Returns the same model, changed in place, with `model.adapter_config` set.
    `progress` shows a bar over the layers: LoRA-XS computes an SVD for each
    (seconds for GPT-2, minutes for gpt2-xl on a CPU). `svd_cache`, an
    SVDCache, lets LoRA-XS runs on copies of one model share those SVDs.
    """
    if isinstance(config, str):
        config = AdapterConfig(config, **settings)
    elif settings:
        raise LoraxsError("give the settings in the AdapterConfig or as keywords after a method name, not both")
    layers = check_adapters(model, config)  # everything is checked before anything changes

    model.requires_grad_(config.method == "full")  # adapters bring their own trainable tensors; all else is frozen
    model.adapter_config = config
    modules = dict(model.named_modules())
    for fused_name in {name.rpartition(".")[0] for name in layers if name not in modules}:  # c_attn taken by thirds
        replace_module(model, fused_name, SplitQKV(modules[fused_name]))
    generator = torch.Generator().manual_seed(config.seed)  # initial A (LoRA) and R (LoRA-XS): seeded, like VeRA's
    if config.method == "vera":  # one random pair, large enough for every layer
        max_in = max(layer.in_features for layer in layers.values())
        max_out = max(layer.out_features for layer in layers.values())
        like = next(iter(layers.values())).weight
        projections = VeRAProjections(config.rank, max_in, max_out, config.seed, like)
    if config.method == "tinylora":  # one v per group of consecutive layers
        groups = tinylora_groups(len(layers), config.weight_tying)
        like = next(iter(layers.values())).weight
        vectors = [TinyLoRAVector(config.u, like) for _ in range(max(groups) + 1)]
    bar = tqdm(layers, desc=f"adding {config.method}", disable=not progress, leave=False, dynamic_ncols=True)
    for index, name in enumerate(bar):
        layer = model.get_submodule(name)
        if config.method == "lora":
            adapter = LoRALinear(layer, config.rank, config.alpha, config.dropout, generator)
        elif config.method == "vera":
            adapter = VeRALinear(layer, projections, config.dropout)
        else:
            triplets = svd_cache.get(name, layer.weight, config.svd) if svd_cache is not None else None
            if config.method == "loraxs":
                adapter = LoRAXSLinear(
                    layer, config.rank, config.alpha, config.dropout, generator, config.svd, triplets
                )
            else:  # the P of the layer with index t among the targets come from seed + t (PEFT's rule)
                vector = vectors[groups[index]]
                adapter = TinyLoRALinear(
                    layer, config.rank, vector, config.seed + index, config.dropout, config.svd, triplets
                )
        replace_module(model, name, adapter)

    if config.method in ("loraxs", "tinylora"):  # both freeze the top-r subspace of W
        warn_about_narrow_gaps({name: model.get_submodule(name) for name in layers})
    return model


def check_adapters(model, config):
    """
    Can `config` be added to `model`? Raises a LoraxsError if not, and changes
    nothing either way. Returns the target layers (name -> layer).
    """
    if adapted_layers(model) or getattr(model, "adapter_config", None) is not None:
        raise LoraxsError("this model already has adapters; start from a fresh model to add others")
    layers = find_targets(model, config.targets) if config.method in ADAPTER_METHODS else {}
    for name, layer in layers.items():
        if config.method in ("loraxs", "tinylora"):
            try:
                check_loraxs_rank(layer, config.rank, {"loraxs": "LoRA-XS", "tinylora": "TinyLoRA"}[config.method])
            except LoraxsError as error:
                raise LoraxsError(f"{name}: {error}") from None
        largest = min(layer.in_features, layer.out_features)
        if config.method == "lora" and config.rank > largest:  # ΔW = B A has rank <= min(in, out) whatever r is
            raise LoraxsError(
                f"{name}: LoRA rank {config.rank} is more than a {layer.out_features} x {layer.in_features} layer "
                f"can use (B A has rank at most {largest}); choose rank <= {largest}"
            )
    if config.method == "tinylora" and 4 * config.u * config.rank**2 * len(layers) > MAX_PROJECTION_BYTES:
        raise LoraxsError(
            f"TinyLoRA with u = {config.u:,} at rank {config.rank} needs {len(layers)} x {config.u:,} random "
            f"{config.rank} x {config.rank} matrices, over 2 GiB; choose a smaller u (u = r² = "
            f"{config.rank**2} already spans every R)"
        )
    if config.method == "vera":  # r may exceed the width (the pair is random), but not the memory
        widest_in = max(layer.in_features for layer in layers.values())
        widest_out = max(layer.out_features for layer in layers.values())
        pair_bytes = 4 * config.rank * (widest_in + widest_out)  # A: r x in, B: out x r, float32
        if pair_bytes > MAX_VERA_PAIR_BYTES:
            raise LoraxsError(
                f"VeRA rank {config.rank:,} needs a shared random pair of {pair_bytes / 2**30:,.1f} GiB on this "
                f"model; choose a rank up to {MAX_VERA_PAIR_BYTES // (4 * (widest_in + widest_out)):,}"
            )
    return layers


def warn_about_narrow_gaps(layers):
    """One warning naming the LoRA-XS layers whose σ_r / σ_{r+1} is so close to 1 that the subspace is ill-defined."""
    narrow = [name for name, layer in layers.items() if layer.gap < NARROW_GAP]
    if narrow:
        warnings.warn(
            f"in {len(narrow)} of {len(layers)} layers (first: {narrow[0]}) σ_r / σ_(r+1) < {NARROW_GAP}: the "
            "top-r subspace that LoRA-XS and TinyLoRA freeze is barely defined there, and another machine's SVD "
            "may find a different one. To load the adapter anywhere, save it with save_adapters(..., frozen=True) "
            "(train.py --save-frozen).",
            stacklevel=3,
        )


def replace_module(model, name, module):
    parent_name, _, child_name = name.rpartition(".")
    setattr(model.get_submodule(parent_name), child_name, module)


def adapted_layers(model):
    """name -> adapter, for every adapted layer of the model."""
    return {name: module for name, module in model.named_modules() if isinstance(module, AdaptedLinear)}


def merge_adapters(model):
    """
    Fold every adapter into its layer (W <- W + ΔW) and put the plain
    `nn.Linear` back: the result is an ordinary GPT that `save_pretrained`
    can write and that runs exactly as fast as the original.
    """
    return take_out_adapters(model, merge=True)


def remove_adapters(model):
    """Take every adapter out without merging: the model computes what it computed before add_adapters."""
    return take_out_adapters(model, merge=False)


def take_out_adapters(model, merge):
    for name, adapter in adapted_layers(model).items():
        if merge:
            adapter.merge()
        else:
            adapter.unmerge()  # does nothing unless merged
        replace_module(model, name, adapter.base)
    for name, module in list(model.named_modules()):
        if isinstance(module, SplitQKV):
            replace_module(model, name, module.fused())  # q, k, v back into one c_attn
    if hasattr(model, "adapter_config"):
        del model.adapter_config
    return model


def adapter_parameters(model):
    """The tensors the adapters brought (not the wrapped layers' own W and b)."""
    return [
        parameter
        for adapter in adapted_layers(model).values()
        for name, parameter in adapter.named_parameters()
        if not name.startswith("base.")
    ]


def parameter_counts(model):
    """
    (trainable, base): the parameters that train, and the size of the model
    without its adapters (the tied head counted once), so trainable / base is
    the share of GPT-2 being trained.
    """
    added = {id(parameter) for parameter in adapter_parameters(model)}
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    base = sum(p.numel() for p in model.parameters() if id(p) not in added)
    return trainable, base


def describe_parameters(model):
    trainable, base = parameter_counts(model)
    return f"{trainable:,} trainable parameters, {100 * trainable / base:.4g}% of the model's {base:,}"
