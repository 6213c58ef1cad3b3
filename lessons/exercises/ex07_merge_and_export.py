"""
Exercises for lesson 07: merging and exporting.

Complete each function where it says TODO, then check your work:

    python -m loraxs_mini.check 07
"""

import torch  # noqa: F401 (you will need it)


def merged_linear(adapter):
    """
    Given an adapted layer (LoRA, VeRA or LoRA-XS, with .base, .in_features, .out_features and
    .delta_weight()), return a NEW torch.nn.Linear that computes the same outputs. Leave the
    adapter itself unchanged.
    """
    raise NotImplementedError("TODO")


def adapter_data_bytes(method, rank, layer_shapes):
    """
    How many bytes of trained float32 numbers does an adapter file of `method` ("lora", "vera" or
    "loraxs") at `rank` hold, for adapted layers of the given (in_features, out_features) shapes?
    (The file adds a small JSON header; count only the numbers, 4 bytes each.)
    """
    raise NotImplementedError("TODO")
