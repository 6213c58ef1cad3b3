"""Reference solutions for lesson 07. Try lessons/exercises/ex07_merge_and_export.py first!"""

import torch


def merged_linear(adapter):
    merged = torch.nn.Linear(adapter.in_features, adapter.out_features)
    with torch.no_grad():
        merged.weight.copy_(adapter.base.weight + adapter.delta_weight())
        merged.bias.copy_(adapter.base.bias)
    return merged


def adapter_data_bytes(method, rank, layer_shapes):
    per_layer = {
        "lora": lambda in_features, out_features: rank * (in_features + out_features),
        "vera": lambda in_features, out_features: rank + out_features,
        "loraxs": lambda in_features, out_features: rank * rank,
    }[method]
    return 4 * sum(per_layer(in_features, out_features) for in_features, out_features in layer_shapes)
