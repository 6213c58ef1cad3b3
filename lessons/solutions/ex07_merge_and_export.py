"""Reference solutions for lesson 07. Try lessons/exercises/ex07_merge_and_export.py first!"""

import tempfile
from pathlib import Path

import torch

from loraxs_mini import GPT, GPTConfig
from loraxs_mini.adapters import add_adapters, save_adapters


def merged_linear(adapter):
    merged = torch.nn.Linear(adapter.in_features, adapter.out_features)
    with torch.no_grad():
        merged.weight.copy_(adapter.base.weight + adapter.delta_weight())
        merged.bias.copy_(adapter.base.bias)
    return merged


def adapter_file_bytes(method, rank):
    torch.manual_seed(0)
    model = add_adapters(GPT(GPTConfig.from_name("tiny")), method, rank=rank)
    path = Path(tempfile.mkdtemp()) / f"{method}-r{rank}.safetensors"
    save_adapters(model, path)  # LoRA grows as r (A and B), LoRA-XS as r² (R), VeRA barely (d has r numbers)
    return path.stat().st_size
