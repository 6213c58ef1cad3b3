"""Export to PEFT's format and import from it: the same logits on both sides, and one clear line for bad input."""

import subprocess
import sys

import pytest
import torch

from conftest import ROOT, tiny_gpt
from loraxs_mini.adapters import EVERY_LINEAR_SPLIT_QKV, AdapterConfig, add_adapters, save_adapters
from loraxs_mini.export import export_to_peft, import_peft_lora
from loraxs_mini.pretrained import load_pretrained, save_pretrained

peft = pytest.importorskip("peft")
transformers = pytest.importorskip("transformers")

CASES = {  # name: (AdapterConfig settings, export as LoRA)
    "lora": (dict(method="lora", rank=4, alpha=16.0), False),
    "lora-qkv": (dict(method="lora", rank=3, targets=EVERY_LINEAR_SPLIT_QKV), False),
    "vera": (dict(method="vera", rank=8, seed=5), False),
    "vera-as-lora": (dict(method="vera", rank=8), True),
    "loraxs": (dict(method="loraxs", rank=4), False),
    "loraxs-qkv": (dict(method="loraxs", rank=4, targets=EVERY_LINEAR_SPLIT_QKV), False),
    "tinylora": (dict(method="tinylora", rank=2, u=5, weight_tying=0.5, seed=3), False),
    "tinylora-qkv-as-lora": (dict(method="tinylora", rank=2, targets=EVERY_LINEAR_SPLIT_QKV), True),
}


def trained(model):
    """Every trained tensor moved well away from its start, as training would: B = 0 or v = 0 would hide mistakes."""
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.requires_grad:
                parameter.copy_(0.1 * torch.randn(parameter.shape, generator=generator))
    return model.eval()


@pytest.fixture
def prompt():
    return torch.randint(0, 50257, (2, 12), generator=torch.Generator().manual_seed(2))


@pytest.mark.parametrize("case", CASES)
def test_every_adapter_exported_runs_in_peft_with_the_same_logits(hf_tiny, prompt, tmp_path, case):
    hf_model, folder = hf_tiny
    settings, as_lora = CASES[case]
    ours = trained(add_adapters(load_pretrained(folder), AdapterConfig(**settings)))
    export_to_peft(ours, tmp_path / "peft", str(folder), as_lora=as_lora)
    theirs = peft.PeftModel.from_pretrained(type(hf_model).from_pretrained(folder), tmp_path / "peft").eval()
    expected_type = "LORA" if as_lora or settings["method"] in ("lora", "loraxs") else settings["method"].upper()
    assert theirs.peft_config["default"].peft_type.value == expected_type
    with torch.no_grad():
        torch.testing.assert_close(theirs(prompt).logits, ours(prompt)[0], atol=1e-5, rtol=0)
        assert (ours(prompt)[0] - hf_model(prompt).logits).abs().max() > 1e-2  # the adapter changes something


@pytest.mark.parametrize("rslora", [False, True])
def test_a_peft_lora_adapter_imports_with_the_same_logits(hf_tiny, prompt, tmp_path, rslora):
    hf_model, folder = hf_tiny
    config = peft.LoraConfig(r=4, lora_alpha=8, target_modules=["c_attn", "c_proj", "c_fc"], fan_in_fan_out=True,
                             use_rslora=rslora)  # fmt: skip
    theirs = peft.get_peft_model(type(hf_model).from_pretrained(folder), config)
    trained(theirs)
    theirs.save_pretrained(tmp_path / "peft")
    ours = import_peft_lora(load_pretrained(folder), tmp_path / "peft").eval()
    assert ours.adapter_config.method == "lora" and ours.adapter_config.rank == 4
    with torch.no_grad():
        torch.testing.assert_close(ours(prompt)[0], theirs(prompt).logits, atol=1e-5, rtol=0)


def test_the_command_writes_a_folder_peft_loads(hf_tiny, tmp_path):
    hf_model, folder = hf_tiny
    save_adapters(trained(add_adapters(load_pretrained(folder), "loraxs", rank=4)), tmp_path / "a.safetensors")
    result = export_command(tmp_path / "a.safetensors", folder, tmp_path / "out", "--check")
    assert result.returncode == 0, result.stderr
    assert "a PEFT LoRA adapter" in result.stdout
    difference = float(result.stdout.split("the largest logit difference is ")[1])
    assert difference < 1e-5
    assert sorted(path.name for path in (tmp_path / "out").iterdir()) == [
        "adapter_config.json",
        "adapter_model.safetensors",
    ]


def test_check_compares_in_float32_when_the_base_is_stored_in_float16(hf_tiny, tmp_path):
    hf_model, _ = hf_tiny
    half = tmp_path / "half"  # as the Hub stores GPT-2: float16 weights
    hf_model.half().save_pretrained(half)
    hf_model.float()  # the fixture's model is shared: give it back as it was
    save_adapters(trained(add_adapters(load_pretrained(half), "loraxs", rank=4)), tmp_path / "a.safetensors")
    result = export_command(tmp_path / "a.safetensors", half, tmp_path / "out", "--check")
    assert result.returncode == 0, result.stderr
    difference = float(result.stdout.split("the largest logit difference is ")[1])
    assert difference < 1e-4  # PEFT in float16 was 2.3e-3 off here (3e-2 to 4e-2 on GPT-2)


def export_command(adapter, base, to, *extra):
    command = [sys.executable, "-m", "loraxs_mini.export", adapter, "--base", base, "--to", to, *extra]
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True)


def test_bad_input_is_one_error_line_and_writes_nothing(hf_tiny, tmp_path):
    _, folder = hf_tiny
    other = tmp_path / "other"  # the same shape, other weights
    hf = transformers.GPT2LMHeadModel.from_pretrained(folder)
    with torch.no_grad():
        hf.transformer.h[0].mlp.c_fc.weight.add_(0.5)
    hf.save_pretrained(other)
    save_adapters(trained(add_adapters(load_pretrained(folder), "lora", rank=2)), tmp_path / "lora.safetensors")
    save_adapters(add_adapters(load_pretrained(folder), "full"), tmp_path / "full.safetensors")
    vera_qkv = add_adapters(load_pretrained(folder), "vera", rank=4, targets=EVERY_LINEAR_SPLIT_QKV)
    save_adapters(trained(vera_qkv), tmp_path / "vera-qkv.safetensors")
    save_pretrained(tiny_gpt(), tmp_path / "plain")
    cases = {
        "not ours": (tmp_path / "plain" / "model.safetensors", folder, "not an adapter file"),
        "another base": (tmp_path / "lora.safetensors", other, "other weights"),
        "full fine-tuning": (tmp_path / "full.safetensors", folder, "no adapter to export"),
        "VeRA on q, k, v": (tmp_path / "vera-qkv.safetensors", folder, "--as-lora"),
    }
    for what, (adapter, base, words) in cases.items():
        result = export_command(adapter, base, tmp_path / "out")
        lines = result.stderr.strip().splitlines()
        assert result.returncode == 1 and len(lines) == 1 and lines[0].startswith("error:"), (what, result.stderr)
        assert words in lines[0], (what, lines[0])
        assert not (tmp_path / "out").exists(), what
