"""
LoRA, VeRA, LoRA-XS and TinyLoRA, side by side, one file each.

    base.py     what the three share: a frozen nn.Linear + a low-rank update, merge / unmerge
    lora.py     ΔW = (alpha / r) B A                 A, B trained
    vera.py     ΔW = diag(b) B diag(d) A              A, B frozen random and shared; d, b trained
    loraxs.py   ΔW = (alpha / r) B R A                B, A from the SVD of W, frozen; R (r x r) trained
    tinylora.py ΔW = B (Σ_i v_i P_i) A               LoRA-XS's B, A; P_i frozen random; v (u numbers) trained
    svd.py      the top-r singular triplets that LoRA-XS starts from, three ways
    config.py   AdapterConfig: method, rank, alpha, targets, ..., and each method's defaults
    qkv.py      GPT-2's fused c_attn as three layers q, k, v, for adapters on each
    inject.py   add_adapters / merge_adapters / remove_adapters / parameter_counts
    saving.py   save_adapters / load_adapters: the trained tensors, the config, checks
"""

from .base import AdaptedLinear
from .config import (
    ADAPTER_METHODS,
    DEFAULT_RANK,
    DEFAULT_TARGETS,
    EVERY_LINEAR,
    EVERY_LINEAR_SPLIT_QKV,
    METHODS,
    AdapterConfig,
)
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
from .loraxs import LoRAXSLinear, SVDCache
from .qkv import SplitQKV
from .saving import load_adapters, save_adapters
from .svd import SVD_METHODS, truncated_svd
from .tinylora import TinyLoRALinear
from .vera import VeRALinear, VeRAProjections

__all__ = [
    "ADAPTER_METHODS", "DEFAULT_RANK", "DEFAULT_TARGETS", "EVERY_LINEAR", "EVERY_LINEAR_SPLIT_QKV", "METHODS",
    "AdaptedLinear", "AdapterConfig", "LoRALinear", "LoRAXSLinear", "SplitQKV", "SVDCache", "TinyLoRALinear",
    "VeRALinear", "VeRAProjections", "adapted_layers", "add_adapters", "check_adapters", "describe_parameters",
    "find_targets", "load_adapters", "merge_adapters", "parameter_counts", "remove_adapters", "save_adapters",
    "SVD_METHODS", "truncated_svd",
]  # fmt: skip
