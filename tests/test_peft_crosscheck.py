"""Our LoRA and VeRA against Hugging Face PEFT on the same random GPT-2, number for number."""

import pytest
import torch

from loraxs_mini.adapters import adapted_layers, add_adapters, parameter_counts
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


@pytest.mark.parametrize("weight_tying", [0.0, 0.5, 1.0])
def test_tinylora_has_peft_s_counts_and_projections_and_with_peft_s_b_and_a_its_logits(hf_tiny, prompt, weight_tying):
    hf_model, folder = hf_tiny
    config = peft.TinyLoraConfig(
        r=2, u=5, weight_tying=weight_tying, projection_seed=7, target_modules=TARGETS, fan_in_fan_out=True
    )
    theirs = peft.get_peft_model(type(hf_model).from_pretrained(folder), config).eval()
    ours = add_adapters(load_pretrained(folder), "tinylora", rank=2, u=5, weight_tying=weight_tying, seed=7, svd="svd")
    ours.eval()
    theirs_trainable = sum(p.numel() for p in theirs.parameters() if p.requires_grad)
    assert parameter_counts(ours)[0] == theirs_trainable  # u per group: 40, 20 and 5 on 8 layers
    layers = adapted_layers(ours)
    vectors = {id(layer.vector): layer.vector.v for layer in layers.values()}  # one per group
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for v in vectors.values():
            v.copy_(torch.randn(v.shape, generator=generator))
        for name, layer in layers.items():
            twin = peft_layer(theirs, name)
            assert torch.equal(layer.P, twin.tinylora_P["default"])  # seed + the layer's index, the same numbers
            B, A = twin.tinylora_B["default"], twin.tinylora_A["default"]
            # The same SVD, Σ split the same way; only the signs of singular-vector pairs may differ (we fix them,
            # PEFT takes LAPACK's), so B A agrees and B, A agree column by column up to sign. Take PEFT's signs.
            torch.testing.assert_close(layer.B @ layer.A, B @ A, atol=1e-5, rtol=0)
            torch.testing.assert_close(layer.B.abs(), B.abs(), atol=1e-5, rtol=0)
            layer.B.copy_(B)
            layer.A.copy_(A)
            twin.tinylora_v["default"][twin._tinylora_v_key["default"]].copy_(layer.vector.v)
        for name, layer in layers.items():  # ΔW in Conv1D's (in, out) layout on PEFT's side
            theirs_delta = peft_layer(theirs, name).get_delta_weight("default")
            torch.testing.assert_close(layer.delta_weight(), theirs_delta.T, atol=1e-6, rtol=1e-5)
        torch.testing.assert_close(ours(prompt)[0], theirs(prompt).logits, atol=1e-5, rtol=0)
        assert (ours(prompt)[0] - hf_model(prompt).logits).abs().max() > 1e-2


def test_tinylora_singular_vector_signs_differ_from_peft_s_so_a_v_carries_over_only_with_its_b_and_a(hf_tiny, prompt):
    """
    Ours fixes each singular pair's sign (svd.py); PEFT takes LAPACK's. Same subspace, same P, same B A, yet for
    the same v another ΔW wherever a pair's sign differs: the export therefore stores B and A with v.
    """
    hf_model, folder = hf_tiny
    config = peft.TinyLoraConfig(r=2, u=4, projection_seed=0, target_modules=TARGETS, fan_in_fan_out=True)
    theirs = peft.get_peft_model(type(hf_model).from_pretrained(folder), config).eval()
    ours = add_adapters(load_pretrained(folder), "tinylora", rank=2, u=4, svd="svd").eval()
    flipped = pairs = 0
    with torch.no_grad():
        for name, layer in adapted_layers(ours).items():
            twin = peft_layer(theirs, name)
            B = twin.tinylora_B["default"]
            signs = torch.sign((layer.B * B).sum(dim=0))  # +1 where a column agrees, -1 where it is flipped
            torch.testing.assert_close(layer.B, B * signs, atol=1e-5, rtol=0)  # equal up to the signs
            flipped, pairs = flipped + int((signs < 0).sum()), pairs + len(signs)
            v = torch.arange(1.0, 5.0)
            layer.vector.v.copy_(v)
            twin.tinylora_v["default"][twin._tinylora_v_key["default"]].copy_(v)
        assert 0 < flipped < pairs  # some pairs agree, some are flipped: 8 of 16 on this model
        difference = (ours(prompt)[0] - theirs(prompt).logits).abs().max().item()
    assert difference > 1e-3, "the same v on differently signed B and A should give other logits"
