"""Export to PEFT's format and import from it: the same logits on both sides, and one clear line for bad input."""

import copy
import json
import re
import subprocess
import sys

import pytest
import torch

from conftest import ROOT, tiny_gpt
from loraxs_mini.adapters import EVERY_LINEAR_SPLIT_QKV, AdapterConfig, add_adapters, save_adapters
from loraxs_mini.errors import LoraxsError
from loraxs_mini.export import export_to_peft, import_peft_lora
from loraxs_mini.export import main as export_main
from loraxs_mini.pretrained import load_pretrained, save_pretrained
from loraxs_mini.safetensors_file import load_file, save_file

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
    "loraxs-random": (dict(method="loraxs", rank=4, subspace="random"), False),
    "loraxs-bottom-own-scale": (dict(method="loraxs", rank=4, subspace="bottom", scale="own"), False),
    "loraxs-random-own-scale": (dict(method="loraxs", rank=4, subspace="random", scale="own"), False),
    "loraxs-kaiming-uniform": (dict(method="loraxs", rank=4, subspace="kaiming-uniform"), False),
    "lorasb": (dict(method="lorasb", rank=4), False),
    "lorasb-qkv": (dict(method="lorasb", rank=3, targets=EVERY_LINEAR_SPLIT_QKV), False),
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
    first_step = (prompt, prompt, 1e-3)  # LoRA-SB's start (the others ignore it)
    ours = trained(add_adapters(load_pretrained(folder), AdapterConfig(**settings), first_step=first_step))
    export_to_peft(ours, tmp_path / "peft", str(folder), as_lora=as_lora)
    theirs = peft.PeftModel.from_pretrained(type(hf_model).from_pretrained(folder), tmp_path / "peft").eval()
    as_lora = as_lora or settings["method"] in ("lora", "loraxs", "lorasb")  # PEFT has no LoRA-XS or LoRA-SB
    expected_type = "LORA" if as_lora else settings["method"].upper()
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
    said = re.search(r"the largest logit difference is ([\d.e+-]+), within 0.0001: passed", result.stdout)
    difference = float(said[1])
    assert difference < 1e-5
    assert sorted(path.name for path in (tmp_path / "out").iterdir()) == [
        "adapter_config.json",
        "adapter_model.safetensors",
    ]


def test_check_compares_in_float32_when_the_base_is_stored_in_float16(hf_tiny, tmp_path):
    hf_model, _ = hf_tiny
    half = tmp_path / "half"  # as the Hub stores GPT-2: float16 weights
    copy.deepcopy(hf_model).half().save_pretrained(half)  # a copy: the fixture's model is shared by other tests
    save_adapters(trained(add_adapters(load_pretrained(half), "loraxs", rank=4)), tmp_path / "a.safetensors")
    result = export_command(tmp_path / "a.safetensors", half, tmp_path / "out", "--check")
    assert result.returncode == 0, result.stderr
    difference = float(re.search(r"the largest logit difference is ([\d.e+-]+), within", result.stdout)[1])
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


def listing(folder):
    return sorted(str(path.relative_to(folder)) for path in folder.rglob("*"))


def test_a_bad_destination_is_refused_before_anything_is_written(hf_tiny, tmp_path):
    _, folder = hf_tiny
    model = trained(add_adapters(load_pretrained(folder), "loraxs", rank=4))
    base_copy = tmp_path / "base"
    load_pretrained(folder)  # the base itself stays untouched: refuse a copy of it
    transformers.GPT2LMHeadModel.from_pretrained(folder).save_pretrained(base_copy)
    (tmp_path / "a-file").write_text("")
    (tmp_path / "blocked" / "adapter_config.json").mkdir(parents=True)
    cases = {  # destination: the words of the one error
        tmp_path / "a-file" / "out": "a-file is a file, not a folder",
        tmp_path / "a-file": "a-file is a file, not a folder",
        base_copy: "holds a model (config.json)",
        tmp_path / "blocked": "adapter_config.json is a folder",
    }
    for destination, words in cases.items():
        before = listing(tmp_path)
        with pytest.raises(LoraxsError, match=re.escape(words)):
            export_to_peft(model, destination, str(folder))
        assert listing(tmp_path) == before, destination
    result = export_command(tmp_path / "none.safetensors", base_copy, base_copy)  # the base's own folder, by command
    assert result.returncode == 1 and "holds a model" in result.stderr and listing(tmp_path) == before


def test_a_model_without_adapters_is_told_so_not_about_full_fine_tuning(hf_tiny, tmp_path):
    _, folder = hf_tiny
    with pytest.raises(LoraxsError, match="has no adapters \\(a plain model, or one whose adapters were merged\\)"):
        export_to_peft(load_pretrained(folder), tmp_path / "out", str(folder))


def peft_folder(hf_tiny, tmp_path, **settings):
    """A real PEFT LoRA folder for the tiny model, its tensors moved off their start."""
    hf_model, folder = hf_tiny
    config = peft.LoraConfig(r=4, lora_alpha=8, target_modules=["c_attn", "c_proj", "c_fc"], fan_in_fan_out=True,
                             **settings)  # fmt: skip
    theirs = trained(peft.get_peft_model(type(hf_model).from_pretrained(folder), config))
    theirs.save_pretrained(tmp_path / "peft")
    return theirs, tmp_path / "peft"


def edit_config(path, **changes):
    settings = json.loads((path / "adapter_config.json").read_text())
    (path / "adapter_config.json").write_text(json.dumps({**settings, **changes}))


def edit_tensors(path, rename=None, extra=None, drop=None):
    tensors, metadata = load_file(path / "adapter_model.safetensors")
    tensors = {rename(name) if rename else name: tensor for name, tensor in tensors.items() if name != drop}
    save_file({**tensors, **(extra or {})}, path / "adapter_model.safetensors", metadata)


IMPORT_REFUSALS = {  # case: (edit of a real PEFT folder, the words of the one error)
    "PiSSA-style init": (lambda p: edit_config(p, init_lora_weights="pissa"), "init_lora_weights='pissa'"),
    "activated LoRA": (lambda p: edit_config(p, alora_invocation_tokens=[1, 2]), "alora_invocation_tokens"),
    "lora_bias": (lambda p: edit_config(p, lora_bias=True), "lora_bias"),
    "targets disagree": (lambda p: edit_config(p, target_modules=["c_fc"]), "does not name transformer.h.0.attn"),
    "excluded": (lambda p: edit_config(p, exclude_modules=["c_fc"]), "does not name transformer.h.0.mlp.c_fc"),
    "lower-case type": (lambda p: edit_config(p, peft_type="lora"), "PEFT writes and reads 'LORA'"),
    "null dropout": (lambda p: edit_config(p, lora_dropout=None), "lora_dropout should be a number"),
    "not UTF-8": (lambda p: (p / "adapter_config.json").write_bytes(b"\xff" + (p / "adapter_config.json").read_bytes()),
                  "is not UTF-8 text"),
    "made on GPT2Model": (lambda p: edit_tensors(p, rename=lambda name: name.replace(".transformer.h.", ".h.")),
                          "one made on GPT2Model"),
    "lm_head": (lambda p: edit_tensors(p, extra={"base_model.model.lm_head.lora_A.weight": torch.zeros(4, 64),
                                                 "base_model.model.lm_head.lora_B.weight": torch.zeros(50257, 4)}),
                "on lm_head is another model's"),
    "a lone lora_A": (lambda p: edit_tensors(p, drop="base_model.model.transformer.h.0.mlp.c_proj.lora_B.weight"),
                      "but not its partner"),
}  # fmt: skip


@pytest.mark.parametrize("case", IMPORT_REFUSALS)
def test_a_peft_folder_we_cannot_reproduce_is_refused_in_one_line_and_the_model_unchanged(hf_tiny, tmp_path, case):
    _, path = peft_folder(hf_tiny, tmp_path)
    edit, words = IMPORT_REFUSALS[case]
    edit(path)
    model = load_pretrained(hf_tiny[1])
    before = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    with pytest.raises(LoraxsError, match=re.escape(words)):
        import_peft_lora(model, path)
    after = model.state_dict()
    assert after.keys() == before.keys() and all(torch.equal(after[name], before[name]) for name in before)


@pytest.mark.parametrize("settings", [dict(init_lora_weights="gaussian"), dict(target_modules="all-linear")])
def test_a_peft_folder_we_can_reproduce_gives_peft_s_logits(hf_tiny, prompt, tmp_path, settings):
    if "target_modules" in settings:  # all-linear: every linear layer of the blocks, as ours adapt them
        theirs, path = peft_folder(hf_tiny, tmp_path)
        edit_config(path, target_modules="all-linear")
    else:
        theirs, path = peft_folder(hf_tiny, tmp_path, **settings)
    ours = import_peft_lora(load_pretrained(hf_tiny[1]), path).eval()
    reloaded = peft.PeftModel.from_pretrained(transformers.GPT2LMHeadModel.from_pretrained(hf_tiny[1]), path).eval()
    with torch.no_grad():
        torch.testing.assert_close(ours(prompt)[0], reloaded(prompt).logits, atol=1e-4, rtol=0)
        torch.testing.assert_close(ours(prompt)[0], theirs.eval()(prompt).logits, atol=1e-4, rtol=0)


@pytest.mark.parametrize(("subspace", "scale"), [("bottom", "own"), ("random", "own"), ("kaiming-uniform", "top")])
def test_each_loraxs_pair_trains_saves_reloads_bit_for_bit_merges_and_exports(
    hf_tiny, tmp_path, monkeypatch, capsys, subspace, scale
):
    """train.py with the pair and its own default rate (no --lr), then the file it wrote: what a student does next."""
    import train
    from loraxs_mini.adapters import load_adapters, merge_adapters

    _, folder = hf_tiny
    trained_models, real_fine_tune = [], train.fine_tune

    def recording_fine_tune(model, *args, **kwargs):
        trained_models.append(model)
        return real_fine_tune(model, *args, **kwargs)

    monkeypatch.setattr(train, "fine_tune", recording_fine_tune)
    data = tmp_path / "plural"  # the shipped task's first lines: scoring all of it would be most of the test's time
    data.mkdir()
    for split in ("train", "validation", "test"):
        lines = (ROOT / "data" / "plural" / f"{split}.jsonl").read_text().splitlines(keepends=True)
        (data / f"{split}.jsonl").write_text("".join(lines[:8]))
    pair = ["--subspace", subspace, "--scale", scale]
    train.main(
        ["--init-from", str(folder), "--data", str(data), "--method", "loraxs", *pair, "--rank", "4"]
        + ["--steps", "3", "--batch-size", "4", "--out", str(tmp_path)]
    )
    label = {"top": "", "own": "-own-scale"}[scale]
    path = tmp_path / f"plural-loraxs-{subspace}{label}-r4.safetensors"
    (model,) = trained_models
    loaded = load_adapters(load_pretrained(folder), path).eval()
    prompt = torch.randint(0, 50257, (2, 12), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        expected = model.eval()(prompt)[0]
        assert torch.equal(loaded(prompt)[0], expected)
        torch.testing.assert_close(merge_adapters(loaded)(prompt)[0], expected, atol=1e-4, rtol=0)
    export_main([str(path), "--base", str(folder), "--to", str(tmp_path / "peft"), "--check"])  # what the docs type
    assert "within 0.0001: passed" in capsys.readouterr().out
