"""
Every bad input is one clear error, and a refused operation leaves the model, the registry and every file exactly
as they were: LoRA-SB's first step, stored frozen tensors, edited settings, flags no method uses, data files that
are not files, the export's destination and verdict, downloads that fail, PEFT names that are patterns.
"""

import json
import os
import subprocess
import sys

import pytest
import torch

from conftest import ROOT, tiny_gpt
from loraxs_mini import LoraxsError, export
from loraxs_mini.adapters import add_adapters, load_adapters, save_adapters
from loraxs_mini.cli import parse_args, plan_runs
from loraxs_mini.data import MAX_DATA_BYTES, load_task
from loraxs_mini.download import download_checkpoint
from loraxs_mini.model import IGNORE_INDEX
from loraxs_mini.pretrained import load_pretrained
from loraxs_mini.safetensors_file import load_file, read_header, save_file


def state(model):
    """Everything a refused operation must leave as it was: each tensor's values, whether it trains, each module."""
    tensors = {name: (tensor.detach().clone(), tensor.requires_grad) for name, tensor in model.state_dict().items()}
    modules = [(name, type(module)) for name, module in model.named_modules()]
    return tensors, modules, getattr(model, "adapter_config", None)


def same_state(before, after):
    (tensors, modules, config), (tensors_after, modules_after, config_after) = before, after
    return (
        modules == modules_after
        and config is config_after
        and tensors.keys() == tensors_after.keys()
        and all(torch.equal(tensors[name][0], tensors_after[name][0]) for name in tensors)
    )


def batch(length=6, rows=2):
    """A graded batch for the tiny model: (inputs, targets), the last two tokens of each row graded."""
    inputs = torch.randint(0, 1000, (rows, length), generator=torch.Generator().manual_seed(0))
    targets = torch.full_like(inputs, IGNORE_INDEX)
    targets[:, -2:] = inputs[:, -2:]
    return inputs, targets


# ---------------------------------------------------------------- LoRA-SB's first step

INPUTS, TARGETS = batch()
FIRST_STEPS = {
    "token ids beyond the vocabulary": ((INPUTS + 50257, TARGETS, 1e-3), "outside this model's vocabulary"),
    "float inputs": ((INPUTS.float(), TARGETS, 1e-3), "tensors of token ids"),
    "1-D inputs": ((INPUTS[0], TARGETS[0], 1e-3), "tensors of token ids"),
    "targets beyond the vocabulary": ((INPUTS, TARGETS.masked_fill(TARGETS >= 0, 60000), 1e-3), "vocabulary"),
    "every target ignored": ((INPUTS, torch.full_like(TARGETS, IGNORE_INDEX), 1e-3), "grade no token"),
    "an empty batch": ((INPUTS[:0], TARGETS[:0], 1e-3), "must have one shape and hold tokens"),
    "longer than the context": ((*batch(length=129), 1e-3), "more than the model's context of 128"),
    "a tensor learning rate": ((INPUTS, TARGETS, torch.tensor(1e-3)), "positive number such as 1e-3, got a Tensor"),
    "a zero learning rate": ((INPUTS, TARGETS, 0.0), "positive number such as 1e-3, got 0.0"),
    "a set": ({1, 2, 3}, r"must be a tuple \(inputs, targets, learning_rate\)"),
}


@pytest.mark.parametrize("first_step, message", FIRST_STEPS.values(), ids=FIRST_STEPS)
def test_a_bad_first_step_is_refused_before_the_model_changes(first_step, message):
    model = tiny_gpt()
    before = state(model)
    with pytest.raises(LoraxsError, match=message):
        add_adapters(model, "lorasb", rank=4, first_step=first_step)
    assert same_state(before, state(model))
    add_adapters(model, "lorasb", rank=4, first_step=(INPUTS, TARGETS, 1e-3))  # and a good one works after it


def test_a_first_step_given_as_a_list_works_like_a_tuple():
    model = add_adapters(tiny_gpt(), "lorasb", rank=4, first_step=[INPUTS, TARGETS, 1e-3])
    assert model.adapter_config.method == "lorasb"


def test_a_first_step_that_moves_no_target_layer_is_refused_and_every_module_goes_back():
    model = tiny_gpt()
    with torch.no_grad():
        model.transformer.h[1].mlp.c_proj.weight.zero_()  # the layer after it gets no gradient: relu-free, but zero W
        model.transformer.h[1].mlp.c_fc.weight.zero_()
        model.transformer.h[1].mlp.c_fc.bias.zero_()
    before = state(model)
    with pytest.raises(LoraxsError, match="does not move transformer.h.1.mlp.c_fc .* gradient on this batch is zero"):
        add_adapters(model, "lorasb", rank=4, first_step=(INPUTS, TARGETS, 1e-3))
    assert same_state(before, state(model))


def test_from_file_is_not_a_way_to_an_adapter_that_cannot_learn():
    model = tiny_gpt()
    before = state(model)
    with pytest.raises(LoraxsError, match="from_file is a setting of no method"):
        add_adapters(model, "lorasb", rank=4, from_file=True)
    assert same_state(before, state(model))


# ---------------------------------------------------------------- frozen tensors stored in a file


def saved(tmp_path, method, frozen, **settings):
    model = tiny_gpt()
    first = (INPUTS, TARGETS, 1e-3) if method == "lorasb" else None
    adapted = add_adapters(model, method, first_step=first, **settings)
    with torch.no_grad():
        for parameter in adapted.parameters():
            if parameter.requires_grad:
                parameter.add_(0.01)  # as if trained
    path = tmp_path / f"{method}.safetensors"
    save_adapters(adapted, path, frozen=frozen)
    return path


def rewrite(path, change_tensors=None, change_metadata=None):
    tensors, metadata = load_file(path)[0], read_header(path)[1]
    if change_tensors:
        change_tensors(tensors)
    if change_metadata:
        change_metadata(metadata)
    save_file(tensors, path, metadata)


STORED_EDITS = {
    "LoRA-SB's B scaled": ("lorasb", lambda t: t["transformer.h.0.attn.c_attn.B"].mul_(1.001), "checksum no longer"),
    "LoRA-SB's B zeroed": ("lorasb", lambda t: t["transformer.h.0.mlp.c_fc.B"].zero_(), "checksum no longer"),
    "LoRA-SB's A noise": ("lorasb", lambda t: t["transformer.h.1.attn.c_proj.A"].normal_(), "checksum no longer"),
    "LoRA-XS's stored B": ("loraxs", lambda t: t["transformer.h.0.attn.c_attn.B"].mul_(1.001), "checksum no longer"),
    "VeRA's stored pair": ("vera", lambda t: t["transformer.h.0.attn.c_attn.projections.A"].mul_(2), "checksum no"),
}


@pytest.mark.parametrize("method, edit, message", STORED_EDITS.values(), ids=STORED_EDITS)
def test_an_edited_stored_frozen_tensor_is_refused(tmp_path, method, edit, message):
    path = saved(tmp_path, method, frozen=True)
    load_adapters(tiny_gpt(), path)  # as saved, it loads
    rewrite(path, change_tensors=edit)
    model = tiny_gpt()
    before = state(model)
    with pytest.raises(LoraxsError, match=message):
        load_adapters(model, path)
    assert same_state(before, state(model))


def test_lorasb_s_b_and_a_must_be_orthonormal_even_when_their_checksums_match(tmp_path):
    from loraxs_mini.adapters.checks import checksum

    path = saved(tmp_path, "lorasb", frozen=True)
    model = tiny_gpt()
    add_adapters(model, "lorasb", rank=8, first_step=(INPUTS, TARGETS, 1e-3))
    order = [name for name, _ in model.named_buffers() if name.endswith((".A", ".B"))]
    tensors, metadata = load_file(path)[0], read_header(path)[1]
    tensors["transformer.h.0.attn.c_attn.B"].mul_(2)
    sums = json.loads(metadata["frozen_checksums"])
    sums[order.index("transformer.h.0.attn.c_attn.B")] = checksum(tensors["transformer.h.0.attn.c_attn.B"])
    save_file(tensors, path, {**metadata, "frozen_checksums": json.dumps(sums)})
    fresh = tiny_gpt()
    before = state(fresh)
    with pytest.raises(LoraxsError, match="its B is not orthonormal .* as LoRA-SB's B and A always are"):
        load_adapters(fresh, path)
    assert same_state(before, state(fresh))


@pytest.mark.parametrize("setting, value", [("subspace", "random"), ("seed", 7)])
def test_an_edited_setting_is_named_as_such_not_as_nearly_equal_singular_values(tmp_path, setting, value):
    path = saved(tmp_path, "loraxs", frozen=False, rank=4)

    def edit(metadata):
        metadata["adapter_config"] = json.dumps({**json.loads(metadata["adapter_config"]), setting: value})

    rewrite(path, change_metadata=edit)
    model = tiny_gpt()
    before = state(model)
    with pytest.raises(LoraxsError, match="its adapter_config was edited after the file was saved"):
        load_adapters(model, path)
    assert same_state(before, state(model))


# ---------------------------------------------------------------- flags a method does not use


@pytest.mark.parametrize(
    "flags, message",
    [
        (
            ["--method", "lorasb", "--alpha", "16"],
            "--alpha is a setting of lora or loraxs; add one of them to --method",
        ),
        (["--method", "vera,tinylora", "--alpha", "16"], "--alpha is a setting of lora or loraxs"),
        (["--method", "full", "--rank", "8"], "--rank is a setting of lora or vera or loraxs or tinylora or lorasb"),
        (["--method", "none,full", "--targets", "mlp.*"], "--targets is a setting of lora or vera"),
        (["--method", "full", "--dropout", "0.1"], "--dropout is a setting of lora or vera"),
        (["--method", "lora", "--svd", "randomized"], "--svd is a setting of loraxs or tinylora; add one of them"),
        (["--method", "lora", "--subspace", "random"], "--subspace is a setting of loraxs; add it to --method"),
    ],
)
def test_a_flag_no_chosen_method_uses_is_refused(flags, message):
    with pytest.raises(LoraxsError, match=message.replace("(", r"\(")):
        plan_runs(parse_args(flags))


def test_a_flag_goes_to_the_methods_that_use_it():
    runs = plan_runs(parse_args(["--method", "all", "--alpha", "16", "--svd", "svd"]))
    assert {run.method: run.alpha for run in runs if run.alpha} == {"lora": 16.0, "loraxs": 16.0}
    assert {run.method for run in runs if run.svd == "svd"} >= {"loraxs", "tinylora"}


@pytest.mark.parametrize(
    "flags",
    [["--method", "vera", "--rank", "lora=8"], ["--method", "loraxs", "--alpha", "lora=16"]],
)
def test_a_value_for_a_method_not_in_the_command_is_refused(flags):
    with pytest.raises(LoraxsError, match="is not in --method, so its value would go unused"):
        plan_runs(parse_args(flags))


# ---------------------------------------------------------------- data files that are not files


def test_data_that_is_a_named_pipe_is_refused_at_once(tmp_path):
    pipe = tmp_path / "train.jsonl"
    os.mkfifo(pipe)  # reading it would wait for a writer forever
    with pytest.raises(LoraxsError, match="is not a regular file"):
        load_task(pipe)


def test_data_that_is_a_device_is_refused(tmp_path):
    with pytest.raises(LoraxsError, match="/dev/zero is not a regular file"):
        load_task("/dev/zero")  # reading it would never end


def test_a_data_file_beyond_the_size_limit_is_refused_unread(tmp_path):
    huge = tmp_path / "huge.jsonl"
    with open(huge, "wb") as file:
        file.truncate(MAX_DATA_BYTES + 1)  # sparse: no disk used, nothing to read
    with pytest.raises(LoraxsError, match="more than the 256 MiB a data file may hold here"):
        load_task(huge)


# ---------------------------------------------------------------- the export and the download


def test_an_export_destination_that_cannot_be_made_is_refused_before_any_work(tmp_path):
    path = tmp_path / "a.safetensors"
    save_adapters(add_adapters(tiny_gpt(), "lora", rank=2), path)
    command = [sys.executable, "-m", "loraxs_mini.export", path, "--base", "/nowhere", "--to", "/proc/no/such/out"]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "the destination /proc/no/such/out: it cannot be made or written here" in result.stderr


def test_the_export_check_says_failed_beyond_its_tolerance(tmp_path, monkeypatch, hf_tiny):
    _, folder = hf_tiny
    path = tmp_path / "a.safetensors"
    save_adapters(add_adapters(load_pretrained(folder), "lora", rank=2), path)
    monkeypatch.setattr(export, "compare_with_peft", lambda *args: 3e-4)  # as if PEFT computed something else
    with pytest.raises(LoraxsError, match=r"difference is 3.0e-04, more than the 0.0001 it may be: .*\(failed\)"):
        export.main([str(path), "--base", str(folder), "--to", str(tmp_path / "out"), "--check"])


def test_a_failed_download_leaves_no_folder_behind(tmp_path, monkeypatch):
    monkeypatch.setenv("LORAXS_MINI_CACHE", str(tmp_path / "cache" / "deeper"))
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing listens there
    with pytest.raises(LoraxsError, match="could not download"):
        download_checkpoint("gpt2")
    assert list(tmp_path.iterdir()) == []


def test_an_imported_peft_lora_with_a_pattern_for_a_layer_name_is_one_line(tmp_path):
    folder = tmp_path / "peft"
    folder.mkdir()
    config = {"peft_type": "LORA", "r": 2, "lora_alpha": 4, "target_modules": ["c_attn"]}
    (folder / "adapter_config.json").write_text(json.dumps(config))
    name = "base_model.model.transformer.h.*.attn.c_attn"
    save_file(
        {f"{name}.lora_A.weight": torch.zeros(2, 32), f"{name}.lora_B.weight": torch.zeros(96, 2)},
        folder / "adapter_model.safetensors",
    )
    model = tiny_gpt()
    before = state(model)
    with pytest.raises(LoraxsError, match="which is no LoRA tensor of a named layer"):
        export.import_peft_lora(model, folder)
    assert same_state(before, state(model))
