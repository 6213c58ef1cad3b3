"""
LoRA, VeRA, LoRA-XS, TinyLoRA and LoRA-SB, side by side, one file each.

    lora.py       ΔW = (alpha / r) B A                 A, B trained
    vera.py       ΔW = diag(b) B diag(d) A              A, B frozen random and shared; d, b trained
    loraxs.py     ΔW = (alpha / r) B R A                B, A from the SVD of W, frozen; R (r x r) trained
    tinylora.py   ΔW = B (Σ_i v_i P_i) A               B, A from LoRA-XS's SVD; P_i frozen random; v (u numbers) trained
    lorasb.py     ΔW = B R A                           B, A from the SVD of full fine-tuning's first step; R trained
    baselines.py  none (zero-shot) and full fine-tuning, the two methods that add no adapter
    registry.py   METHODS: every method by name; register() adds one from outside
    base.py       what every adapter shares (wrap an nn.Linear, merge) and the few names a method must say
    svd.py        the truncated SVD LoRA-XS, TinyLoRA and LoRA-SB start from, and what they share on top of it
    config.py     AdapterConfig: method, rank, alpha, targets, ...: checked once, the method's defaults filled in
    qkv.py        GPT-2's fused c_attn as three layers q, k, v, for adapters on each
    inject.py     add_adapters / merge_adapters / remove_adapters / parameter_counts
    saving.py     save_adapters / load_adapters: the trained tensors and the config
    checks.py     what an adapter file is checked for before it touches a model

A method is one class in one file: its name, default rank, __init__, update and
delta_weight, and whatever else it changes from base.py's defaults.
"""

from .base import AdaptedLinear, Build, Method, Setting
from .baselines import FullFineTuning, ZeroShot
from .config import DEFAULT_TARGETS, EVERY_LINEAR, EVERY_LINEAR_SPLIT_QKV, AdapterConfig
from .inject import (
    adapted_layers,
    add_adapters,
    check_adapters,
    describe_parameters,
    find_targets,
    merge_adapters,
    parameter_counts,
    remove_adapters,
)
from .lora import LoRALinear
from .lorasb import LoRASBLinear
from .loraxs import LoRAXSLinear
from .qkv import SplitQKV
from .registry import DEFAULT_METHOD, METHODS, adapter_methods, register
from .saving import load_adapters, save_adapters
from .svd import SVD_METHODS, SVDCache, truncated_svd
from .tinylora import TinyLoRALinear
from .vera import VeRALinear, VeRAProjections

__all__ = [
    "DEFAULT_METHOD", "DEFAULT_TARGETS", "EVERY_LINEAR", "EVERY_LINEAR_SPLIT_QKV", "METHODS", "SVD_METHODS",
    "AdaptedLinear", "AdapterConfig", "Build", "FullFineTuning", "LoRALinear", "LoRASBLinear", "LoRAXSLinear",
    "Method", "Setting", "SplitQKV", "SVDCache", "TinyLoRALinear", "VeRALinear", "VeRAProjections", "ZeroShot",
    "adapted_layers", "adapter_methods", "add_adapters", "check_adapters", "describe_parameters", "find_targets",
    "load_adapters", "merge_adapters", "parameter_counts", "register", "remove_adapters", "save_adapters",
    "truncated_svd",
]  # fmt: skip
