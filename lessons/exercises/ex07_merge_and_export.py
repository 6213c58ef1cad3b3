"""
Exercises for lesson 07: merging and exporting.

Complete each function where it says TODO, then check your work:

    python lessons/check.py 07
"""

import tempfile  # noqa: F401 (you will need these)
from pathlib import Path  # noqa: F401

import torch  # noqa: F401

from loraxs_mini import GPT, GPTConfig  # noqa: F401
from loraxs_mini.adapters import add_adapters, save_adapters  # noqa: F401


def merged_linear(adapter):
    """
    Given an adapted layer (LoRA, VeRA or LoRA-XS, with .base, .in_features, .out_features and
    .delta_weight()), return a NEW torch.nn.Linear that computes the same outputs. Leave the
    adapter itself unchanged.
    """
    raise NotImplementedError("TODO")


def adapter_file_bytes(method, rank):
    """
    An experiment: how does an adapter file grow with the rank?

    Build the tiny GPT-2 (torch.manual_seed(0); GPT(GPTConfig.from_name("tiny")), from
    loraxs_mini), add `method` adapters ("lora", "vera" or "loraxs") at `rank` with add_adapters,
    save them with save_adapters into a temporary folder, and return the file's size in bytes.

    Measure ranks 4, 8 and 16 for each method. By what factor does each doubling of the rank
    grow the file, and which part of the adapter explains it?
    """
    raise NotImplementedError("TODO")
