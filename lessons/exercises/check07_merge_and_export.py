"""
The checks of lesson 07 (merging and exporting): python lessons/check.py 07

Each check_<name> runs your function <name> from ex07_merge_and_export.py on fresh
inputs and compares it with an independent answer; its docstring is the hint
shown after a wrong attempt.
"""

import tempfile
from pathlib import Path

import torch

from check import close, tiny_model
from loraxs_mini import GPT
from loraxs_mini.adapters import adapter_methods, add_adapters, save_adapters


def check_merged_linear(module):
    """
    a new nn.Linear of the same shape whose weight already contains the update; every adapter knows its update
    (lesson 07); do not forget the bias
    """
    model = tiny_model()
    tokens = torch.randint(0, model.config.vocab_size, (2, 8))
    for method in adapter_methods():
        adapted = add_adapters(GPT(model.config), method, rank=4, first_step=(tokens, tokens, 1e-3))  # LoRA-SB's start
        adapter = adapted.transformer.h[0].mlp.c_fc
        with torch.no_grad():
            for parameter in adapter.parameters():
                if parameter.requires_grad:
                    parameter.normal_(std=0.1)
            x = torch.randn(3, adapter.in_features)
            expected, original_weight = adapter(x), adapter.base.weight.clone()
            merged = module.merged_linear(adapter)
            assert isinstance(merged, torch.nn.Linear), "return a new torch.nn.Linear"
            assert merged is not adapter.base, "build a new layer; the adapter's own base layer must stay as it is"
            close(merged(x), expected, f"the merged {method} layer's output", atol=1e-4)
            assert not adapter.merged and torch.equal(adapter.base.weight, original_weight), "the adapter was changed"


def check_adapter_file_bytes(module):
    """add_adapters, then save_adapters into a temporary folder; a Path knows its size through .stat()"""
    sizes = {}
    for method in ("lora", "loraxs"):
        for rank in (4, 8, 16):
            model = add_adapters(tiny_model(), method, rank=rank)
            expected = save_adapters(model, Path(tempfile.mkdtemp()) / "adapter.safetensors")
            sizes[method, rank] = module.adapter_file_bytes(method, rank)
            assert sizes[method, rank] == expected, (
                f"{method} r={rank}: {sizes[method, rank]:,} bytes, not {expected:,}"
            )
    # What it measures: each doubling of r doubles LoRA's data (A, B) and quadruples LoRA-XS's (R).
    growths = []
    for method, factor in (("lora", 2), ("loraxs", 4)):
        growth = (sizes[method, 16] - sizes[method, 8]) / (sizes[method, 8] - sizes[method, 4])
        assert abs(growth - factor) < 0.1, f"{method}: the file grew {growth:.2f}x per doubling, expected {factor}x"
        growths.append(f"{method} {growth:.2f}x (predicted {factor}x)")
    return "the tensor bytes grew per doubling of r: " + ", ".join(growths)
