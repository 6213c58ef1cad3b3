"""Our LoRA and VeRA against Hugging Face PEFT on the same random GPT-2, number for number."""

import pytest
import torch

from loraxs_mini.adapters import adapted_layers, add_adapters
from loraxs_mini.pretrained import load_pretrained

peft = pytest.importorskip("peft")
TARGETS = ["c_attn", "c_proj", "c_fc"]  # in PEFT these names match both attn.c_proj and mlp.c_proj


def peft_layer(peft_model, name):
    """PEFT's wrapper of the same layer: 'transformer.h.0.attn.c_attn' inside GPT2LMHeadModel."""
    return peft_model.base_model.model.get_submodule(name)


@pytest.fixture
def prompt():
    return torch.randint(0, 50257, (2, 16), generator=torch.Generator().manual_seed(4))


def test_lora_logits_match_peft(hf_tiny, prompt):
    hf_model, folder = hf_tiny
    config = peft.LoraConfig(r=4, lora_alpha=16, target_modules=TARGETS, lora_dropout=0.0, fan_in_fan_out=True)
    theirs = peft.get_peft_model(type(hf_model).from_pretrained(folder), config).eval()
    ours = add_adapters(load_pretrained(folder), "lora", rank=4, alpha=16).eval()
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, layer in adapted_layers(ours).items():
            layer.A.copy_(torch.randn(layer.A.shape, generator=generator) * 0.1)
            layer.B.copy_(torch.randn(layer.B.shape, generator=generator) * 0.1)  # non-zero: a real update
            twin = peft_layer(theirs, name)
            twin.lora_A["default"].weight.copy_(layer.A)  # r x in in both libraries
            twin.lora_B["default"].weight.copy_(layer.B)  # out x r
        torch.testing.assert_close(ours(prompt)[0], theirs(prompt).logits, atol=1e-5, rtol=0)
        assert (ours(prompt)[0] - hf_model(prompt).logits).abs().max() > 1e-2  # the adapters did change something


def test_vera_random_pair_and_logits_match_peft(hf_tiny, prompt):
    hf_model, folder = hf_tiny
    config = peft.VeraConfig(
        r=4, target_modules=TARGETS, projection_prng_key=1234, vera_dropout=0.0, d_initial=0.1, fan_in_fan_out=True
    )
    theirs = peft.get_peft_model(type(hf_model).from_pretrained(folder), config).eval()
    ours = add_adapters(load_pretrained(folder), "vera", rank=4, seed=1234).eval()
    layers = adapted_layers(ours)
    projections = next(iter(layers.values())).projections
    assert torch.equal(projections.A, theirs.base_model.vera_A["default"])  # the same seed, the same numbers
    assert torch.equal(projections.B, theirs.base_model.vera_B["default"])

    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, layer in layers.items():
            twin = peft_layer(theirs, name)
            assert torch.equal(layer.lambda_d, twin.vera_lambda_d["default"])  # the same start: d = 0.1, b = 0
            assert torch.equal(layer.lambda_b, twin.vera_lambda_b["default"])
            layer.lambda_d.copy_(torch.randn(layer.lambda_d.shape, generator=generator))
            layer.lambda_b.copy_(torch.randn(layer.lambda_b.shape, generator=generator))
            twin.vera_lambda_d["default"].copy_(layer.lambda_d)
            twin.vera_lambda_b["default"].copy_(layer.lambda_b)
        torch.testing.assert_close(ours(prompt)[0], theirs(prompt).logits, atol=1e-5, rtol=0)
        assert (ours(prompt)[0] - hf_model(prompt).logits).abs().max() > 1e-2
