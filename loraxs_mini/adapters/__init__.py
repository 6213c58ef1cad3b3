"""
LoRA, VeRA and LoRA-XS, side by side, one file each.

    base.py     what the three share: a frozen nn.Linear + a low-rank update, merge / unmerge
    lora.py     ΔW = (alpha / r) B A                 A, B trained
    vera.py     ΔW = diag(b) B diag(d) A              A, B frozen random and shared; d, b trained
    loraxs.py   ΔW = (alpha / r) B R A                B, A from the SVD of W, frozen; R (r x r) trained
    svd.py      the top-r singular triplets that LoRA-XS starts from, three ways
    inject.py   add_adapters / merge_adapters / parameter_counts
    saving.py   save_adapters / load_adapters: only the trained tensors, plus the recipe
"""

from .base import AdaptedLinear
from .inject import (
    ADAPTER_METHODS,
    DEFAULT_TARGETS,
    METHODS,
    adapted_layers,
    add_adapters,
    describe_parameters,
    find_targets,
    merge_adapters,
    parameter_counts,
)
from .lora import LoRALinear
from .loraxs import LoRAXSLinear
from .saving import load_adapters, read_adapter_config, save_adapters
from .svd import SVD_METHODS, truncated_svd
from .vera import VeRALinear, VeRAProjections

__all__ = [
    "ADAPTER_METHODS", "DEFAULT_TARGETS", "METHODS", "AdaptedLinear", "LoRALinear", "LoRAXSLinear",
    "VeRALinear", "VeRAProjections", "add_adapters", "adapted_layers", "describe_parameters", "find_targets",
    "load_adapters", "merge_adapters", "parameter_counts", "read_adapter_config", "save_adapters", "SVD_METHODS",
    "truncated_svd",
]  # fmt: skip
