"""
The checks of lesson 03 (LoRA): python lessons/check.py 03

Each check_<name> runs your function <name> from ex03_lora.py on fresh
inputs and compares it with an independent answer; its docstring is the hint
shown after a wrong attempt.
"""

import torch

from check import close
from loraxs_mini.adapters import LoRALinear


def random_lora():
    layer = LoRALinear(torch.nn.Linear(12, 20), rank=3, alpha=6)
    with torch.no_grad():
        layer.B.normal_()  # B = 0 would hide mistakes in the update
    return layer


def check_lora_forward(module):
    """the base layer's output plus the low-rank path; x meets A first; r is one of A's dimensions"""
    layer, x = random_lora(), torch.randn(2, 5, 12)
    with torch.no_grad():
        got = module.lora_forward(x, layer.base.weight, layer.base.bias, layer.A, layer.B, 6.0)
        close(got, layer(x), "lora_forward(...)", atol=1e-4)


def check_merged_weight(module):
    """the update the LoRA layer adds, written as one out x in matrix, scaled as in lora_forward"""
    layer = random_lora()
    with torch.no_grad():
        expected = layer.base.weight + layer.delta_weight()
        close(module.merged_weight(layer.base.weight, layer.A, layer.B, 6.0), expected, "the merged weight")


def check_lora_fit_error(module):
    """
    make A and B parameters (B at zero, as in LoRA) and let Adam shrink the squared distance between B @ A and the
    target; measure the relative error at the end
    """
    generator = torch.Generator().manual_seed(3)
    target = torch.randn(20, 2, generator=generator) @ torch.randn(2, 12, generator=generator)  # rank 2
    singular_values = torch.linalg.svdvals(target)
    best_rank_1 = (singular_values[1] / singular_values.norm()).item()  # Eckart-Young: no rank-1 matrix does better
    one, two = module.lora_fit_error(target, 1), module.lora_fit_error(target, 2)
    assert isinstance(one, float) and isinstance(two, float), "return the relative errors as floats"
    assert one >= best_rank_1 - 1e-3, f"rank 1 reached {one:.3f}, below the best possible {best_rank_1:.3f}"
    assert one <= best_rank_1 + 0.02, f"rank 1 stopped at {one:.3f}; training should reach {best_rank_1:.3f}"
    assert two < 1e-2, f"rank 2 stopped at {two:.3f}; a rank-2 target is within its reach (more steps?)"
    return f"rank 1 stopped at {one:.4f} (Eckart-Young's bound: {best_rank_1:.4f}), rank 2 at {two:.1e}"
