"""Reference solutions for lesson 02. Try lessons/exercises/ex02_tokens_and_pretrained_weights.py first!"""

import json
import struct

import torch


def read_safetensors_header(path):
    with open(path, "rb") as file:
        (length,) = struct.unpack("<Q", file.read(8))
        return json.loads(file.read(length))


def conv1d_to_linear(weight):
    return weight.t().contiguous()


def greedy_decode(model, idx, n):
    for _ in range(n):
        logits, _ = model(idx)
        next_token = logits[:, -1].argmax(dim=-1, keepdim=True)
        idx = torch.cat((idx, next_token), dim=1)
    return idx
