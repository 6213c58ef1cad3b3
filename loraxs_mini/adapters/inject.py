"""
Putting adapters into a model, counting what trains, and taking them out again.

`add_adapters(model, "loraxs", rank=8)` finds the target `nn.Linear` layers
by name, replaces each with its adapter wrapper (the wrapper holds the
original layer), and freezes every other parameter. The model's own code is
never edited: only its modules are swapped. What the wrappers are, and what
they share, is the method's own business: its class (registry.py) checks the
layers and builds one wrapper for each.

    method   what trains                              per adapted layer (in -> out)
    none     nothing (the pretrained model, zero-shot)
    full     every parameter of the model
    lora     A (r x in) and B (out x r)                r (in + out)
    vera     d (r) and b (out)                        r + out
    loraxs   R (r x r)                                r²
    lorasb   R (r x r)                                r²
    tinylora v (u), shared by a group of layers          u per group
"""

import fnmatch
import math

import torch
import torch.nn as nn
from tqdm import tqdm

from ..errors import LoraxsError, is_number
from ..model import IGNORE_INDEX
from .base import AdaptedLinear, Build, FirstStep
from .config import EVERY_LINEAR, AdapterConfig
from .qkv import PARTS, SplitQKV


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


def add_adapters(model, config, *, progress=False, svd_cache=None, first_step=None, **settings):
    """
    Wrap the target layers of `model` with an adapter and freeze the rest.
    `config` is an AdapterConfig, or a method name with its settings as
    keywords: add_adapters(model, "loraxs", rank=8) is
    add_adapters(model, AdapterConfig("loraxs", rank=8)).

    Returns the same model, changed in place, with `model.adapter_config` set.
    `progress` shows a bar over the layers: LoRA-XS computes an SVD for each
    (seconds for GPT-2, minutes for gpt2-xl on a CPU). `svd_cache`, an
    SVDCache, lets LoRA-XS runs on copies of one model share those SVDs.
    `first_step`, (inputs, targets, learning_rate): full fine-tuning's first
    batch and the rate of its first step, which LoRA-SB is built from; a
    method not built from it neither reads nor checks it. Everything is
    checked before the model changes, and a build that fails half-way (a
    first step that moves nothing) puts every module back: the model is
    then exactly as it was.
    """
    if isinstance(config, str):
        config = AdapterConfig(config, **settings)
    elif settings:
        raise LoraxsError("give the settings in the AdapterConfig or as keywords after a method name, not both")
    check_adapters(model, config)  # everything is checked before anything changes
    method = config.method_class
    if not method.needs_first_step:
        first_step = None  # never read, so never checked: `none` has no rate at all
    elif first_step is None:
        raise LoraxsError(
            f"{method.display_name} is built from the first step of full fine-tuning: give add_adapters(..., "
            "first_step=(inputs, targets, learning_rate)), a training batch and the rate of the first step, or "
            "load a saved adapter file with load_adapters"
        )
    else:
        first_step = checked_first_step(first_step, model)
    return place_adapters(model, config, Build(svd_cache, first_step), progress)


def place_adapters(model, config, build, progress=False):
    """
    Put `config`'s adapters into `model` (checked already): add_adapters, and load_adapters, which then copies the
    frozen tensors in from its file. If building fails, every module goes back and the model is as it was.
    """
    method, layers = config.method_class, check_adapters(model, config)
    requires_grad = {name: parameter.requires_grad for name, parameter in model.named_parameters()}
    replaced = []  # (name, the module that was there), to put back on failure
    try:
        model.requires_grad_(method.trains_base)  # adapters bring their own trainable tensors; all else is frozen
        model.adapter_config = config
        modules = dict(model.named_modules())
        for fused in {name.rpartition(".")[0] for name in layers if name not in modules}:  # c_attn taken by thirds
            replaced.append((fused, modules[fused]))
            replace_module(model, fused, SplitQKV(modules[fused]))
        layers = {name: model.get_submodule(name) for name in layers}  # q, k, v: now the split layers themselves
        adapters = method.adapt(layers, config, build)  # built one by one, as the bar moves
        bar = tqdm(
            adapters, f"adding {config.method}", len(layers), disable=not progress, leave=False, dynamic_ncols=True
        )
        for name, adapter in bar:
            replaced.append((name, layers[name]))
            replace_module(model, name, adapter)
    except BaseException:
        for name, module in reversed(replaced):
            replace_module(model, name, module)
        model.__dict__.pop("adapter_config", None)
        for name, parameter in model.named_parameters():
            parameter.requires_grad_(requires_grad[name])
        raise
    return model


def check_adapters(model, config):
    """
    Can `config` be added to `model`? Raises a LoraxsError if not, and changes
    nothing either way. Returns the target layers (name -> layer).
    """
    if adapted_layers(model) or getattr(model, "adapter_config", None) is not None:
        raise LoraxsError("this model already has adapters; start from a fresh model to add others")
    if not issubclass(config.method_class, AdaptedLinear):  # none and full: nothing to add
        return {}
    layers = find_targets(model, config.targets)
    config.method_class.check_layers(layers, config)
    return layers


def checked_first_step(first_step, model):
    """
    (inputs, targets, learning_rate), as make_batch gives a batch, checked whole before anything changes: token ids
    of this model's vocabulary, a length within its context, at least one graded token, a positive rate. Returns
    the FirstStep a method reads: the loss of that batch, and the rate.
    """
    if not (isinstance(first_step, (tuple, list)) and len(first_step) == 3):
        raise LoraxsError(
            f"first_step must be a tuple (inputs, targets, learning_rate), a batch from make_batch and "
            f"the rate of the first step; got {type(first_step).__name__}"
        )
    inputs, targets, learning_rate = first_step
    config, device = model.config, model.transformer.wte.weight.device
    if not all(isinstance(t, torch.Tensor) and t.dim() == 2 and t.dtype == torch.long for t in (inputs, targets)):
        raise LoraxsError(
            "first_step's inputs and targets must be tensors of token ids (torch.long), batch x tokens, "
            "as make_batch returns them"
        )
    if inputs.shape != targets.shape or inputs.numel() == 0:
        raise LoraxsError(
            f"first_step's inputs and targets must have one shape and hold tokens; got "
            f"{tuple(inputs.shape)} and {tuple(targets.shape)}"
        )
    if inputs.shape[1] > config.block_size:
        raise LoraxsError(
            f"first_step's batch is {inputs.shape[1]} tokens long, more than the model's context of {config.block_size}"
        )
    graded = targets != IGNORE_INDEX
    if (
        inputs.min() < 0
        or inputs.max() >= config.vocab_size
        or (graded & ((targets < 0) | (targets >= config.vocab_size))).any()
    ):
        raise LoraxsError(
            f"first_step holds token ids outside this model's vocabulary of {config.vocab_size:,}; "
            "was the batch made with another tokenizer?"
        )
    if not graded.any():
        raise LoraxsError(
            "first_step's targets grade no token (all are IGNORE_INDEX): its loss would be NaN and its "
            "update zero; give a batch from make_batch, whose completions are graded"
        )
    if not (is_number(learning_rate) and math.isfinite(learning_rate) and learning_rate > 0):
        got = f"a {type(learning_rate).__name__}" if not is_number(learning_rate) else repr(learning_rate)
        raise LoraxsError(f"first_step's learning rate must be a positive number such as 1e-3, got {got}")
    if inputs.device != device or targets.device != device:
        raise LoraxsError(f"first_step's batch is on {inputs.device}, the model on {device}; move one to the other")
    return FirstStep(lambda: model(inputs, targets)[1], float(learning_rate))  # the batch's mean graded loss


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
