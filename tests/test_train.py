"""train.py end to end on a tiny checkpoint: every method, the outputs, DDP, and every kind of bad input."""

import json
import os
import subprocess
import sys

import pytest
import torch

import train
from conftest import ROOT, SMALL_PRETRAINED, requires_small_pretrained, requires_tokenizer, tiny_gpt
from loraxs_mini import LoraxsError
from loraxs_mini.adapters import EVERY_LINEAR_SPLIT_QKV, METHODS, AdapterConfig, parameter_counts, remove_adapters
from loraxs_mini.cli import parse_args, plan_runs
from loraxs_mini.pretrained import load_pretrained, save_pretrained
from loraxs_mini.recipe import DEFAULT_STEPS, default_learning_rate

TASK_LINES = [
    {"prompt": f"Review: the {noun} was {word}.\nSentiment:", "completion": label}
    for noun in ("film", "soup", "book", "hotel", "concert", "game")
    for word, label in (("great", " positive"), ("awful", " negative"), ("lovely", " positive"), ("dull", " negative"))
]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A tiny random GPT-2 saved in the Hugging Face layout: --init-from takes its folder."""
    folder = tmp_path_factory.mktemp("tiny-checkpoint")
    save_pretrained(tiny_gpt(seed=0), folder)
    return folder


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """A small classification task: 24 train, 8 validation, 8 test examples."""
    folder = tmp_path_factory.mktemp("tasks") / "data"
    folder.mkdir()
    for split, lines in (("train", TASK_LINES), ("validation", TASK_LINES[:8]), ("test", TASK_LINES[8:16])):
        (folder / f"{split}.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    return folder


def run_train(*args):
    """train.py's main() in this process, with the arguments a user would type."""
    return train.main([str(arg) for arg in args])


def run_cli(*args, cwd=ROOT):
    """train.py as a user runs it: a separate process."""
    return subprocess.run([sys.executable, "train.py", *map(str, args)], cwd=cwd, capture_output=True, text=True)


def test_every_method_runs_and_writes_results_and_one_table(checkpoint, data, tmp_path):
    out = tmp_path / "out"
    run_train("--init-from", checkpoint, "--data", data, "--method", "all", "--steps", "12", "--lr", "0.02",
              "--batch-size", "8", "--out", out, "--rank", "4")  # fmt: skip
    base = 1_637_792  # the tiny preset: 2 blocks of width 32, GPT-2's vocabulary
    shapes = [(32, 96), (32, 32), (32, 128), (128, 32)]  # (in, out) of the four layers of a block
    expected = {
        "none": 0,
        "full": base,
        "lora": 2 * sum(4 * (i + o) for i, o in shapes),  # r (in + out) per layer, 2 blocks
        "vera": 2 * sum(4 + o for i, o in shapes),  # r + out
        "loraxs": 2 * 4 * 4**2,  # r² for each of 4 layers
        "tinylora": 2 * 4 * 64,  # u = 64 for each of 4 layers, whatever r
        "lorasb": 2 * 4 * 4**2,  # r², as LoRA-XS
    }
    table = [line for line in (out / "comparison-data.md").read_text().splitlines() if line.startswith("|")]
    assert len(table) == 2 + 7
    for method, count in expected.items():
        name = f"data-{method}" + ("-r4" if method not in ("none", "full") else "")
        result = json.loads((out / f"{name}.json").read_text())
        assert result["trainable_parameters"] == count and result["base_parameters"] == base
        row = next(line for line in table if line.startswith(f"| {method} |"))
        assert f"| {count:,} |" in row
        if method == "none":
            assert result["losses"] == [] and result["accuracy"] == result["zero_shot_accuracy"]
            continue
        losses = result["losses"]
        assert len(losses) == 12 and sum(losses[-3:]) < sum(losses[:3]), method  # the loss falls
        assert (out / f"{name}.safetensors").stat().st_size == result["adapter_bytes"] > 0
        for key in ("wall_seconds", "tokens_per_second", "peak_memory_bytes"):
            assert result[key] > 0
    assert (out / "comparison-data.png").stat().st_size > 0 or pytest.importorskip("matplotlib") is None


@requires_tokenizer
def test_what_a_user_types_first_runs_on_every_default(checkpoint, tmp_path):
    """`--method none` and `--method all` with nothing but a model: each method's own rank, rate and budget."""
    for method in ("none", "all"):
        result = run_cli("--method", method, "--init-from", checkpoint, "--out", tmp_path / method)
        assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads((tmp_path / "none" / "sentiment-none.json").read_text())["steps"] == 0
    runs = {path.stem: json.loads(path.read_text()) for path in (tmp_path / "all").glob("sentiment-*.json")}
    for name, method in METHODS.items():
        config = AdapterConfig(name)
        run = runs[f"sentiment-{name}" + (f"-r{config.rank}" if config.rank else "")]
        assert run["rank"] == method.default_rank and run["learning_rate"] == default_learning_rate(name)
        assert run["steps"] == (DEFAULT_STEPS if method.trains else 0) and len(run["losses"]) == run["steps"]
        assert (run["adapter_file"] is not None) == method.trains and (run["adapter_bytes"] > 0) == method.trains
    for suffix in ("md", "json", "csv", "png"):
        assert (tmp_path / "all" / f"comparison-sentiment.{suffix}").is_file()


def test_loraxs_run_leaves_every_frozen_tensor_bit_for_bit_unchanged(checkpoint, data, tmp_path, monkeypatch):
    trained_models = []
    real_fine_tune = train.fine_tune

    def recording_fine_tune(model, *args, **kwargs):
        trained_models.append(model)
        return real_fine_tune(model, *args, **kwargs)

    monkeypatch.setattr(train, "fine_tune", recording_fine_tune)
    run_train("--init-from", checkpoint, "--data", data, "--method", "loraxs", "--steps", "8", "--lr", "0.1",
              "--targets", ",".join(EVERY_LINEAR_SPLIT_QKV), "--out", tmp_path)  # fmt: skip
    (model,) = trained_models
    assert parameter_counts(model)[0] == 2 * 6 * 64  # q, k, v, attn.c_proj, mlp.c_fc, mlp.c_proj: r² each
    for name, parameter in model.named_parameters():
        if parameter.requires_grad:
            assert name.endswith(".R")
            assert parameter.abs().max() > 1e-3  # R moved well away from its 1e-5 start
    remove_adapters(model)  # what is left is the base model: q, k, v stacked back into c_attn
    pristine = dict(load_pretrained(checkpoint).named_parameters())
    left = dict(model.named_parameters())
    assert left.keys() == pristine.keys()
    assert all(torch.equal(left[name], pristine[name]) for name in pristine)


def test_each_method_runs_at_its_own_default_rank_unless_told(checkpoint, data, tmp_path):
    def configs(*flags):
        args = parse_args(["--method", "all", *flags])
        return {config.method: (config.rank, config.alpha) for config in plan_runs(args)}

    assert configs() == {
        "none": (None, None), "full": (None, None), "lora": (8, 8.0), "vera": (256, None), "loraxs": (8, 8.0),
        "tinylora": (2, None), "lorasb": (8, None),
    }  # fmt: skip
    assert configs("--rank", "lora=4,vera=64", "--alpha", "16") == {
        "none": (None, None), "full": (None, None), "lora": (4, 16.0), "vera": (64, None), "loraxs": (8, 16.0),
        "tinylora": (2, None), "lorasb": (8, None),
    }  # fmt: skip
    tiny = plan_runs(parse_args(["--method", "tinylora", "--u", "4", "--weight-tying", "1"]))
    assert [(config.rank, config.u, config.weight_tying) for config in tiny] == [(2, 4, 1.0)]
    run_train("--init-from", checkpoint, "--data", data, "--method", "vera,loraxs", "--steps", "2", "--no-save",
              "--out", tmp_path)  # fmt: skip
    table = (tmp_path / "comparison-data.md").read_text()
    assert "| vera | 256 | 2,624 |" in table and "| loraxs | 8 | 512 |" in table  # 2 x (4 x 256 + 96+32+128+32)


def test_shipped_generative_task_runs(checkpoint, tmp_path):
    run_train("--init-from", checkpoint, "--task", "plural", "--method", "lora", "--steps", "3", "--out", tmp_path)
    result = json.loads((tmp_path / "plural-lora-r8.json").read_text())
    assert result["task"] == "plural" and 0 <= result["accuracy"]["test"] <= 1


@requires_small_pretrained
def test_loraxs_learns_from_a_pretrained_start_and_not_from_random_weights(tmp_path):
    # The project's claim in miniature: R mixes directions that pretraining made meaningful. 80 steps (about half
    # the default budget) on the shipped sentiment task, whose test reviews use words never seen in training.
    test_accuracy = {}
    for start, init_from in (("pretrained", SMALL_PRETRAINED), ("random", f"random:{SMALL_PRETRAINED}")):
        out = tmp_path / start
        run_train("--init-from", init_from, "--method", "loraxs", "--steps", "80", "--no-save", "--out", out)
        result = json.loads((out / "sentiment-loraxs-r8.json").read_text())
        assert result["trainable_parameters"] == 8 * 4 * 8**2  # 8 blocks, 4 layers, r² each
        test_accuracy[start] = result["accuracy"]["test"], result["zero_shot_accuracy"]["test"]
    (pretrained, zero_shot), (random, _) = test_accuracy["pretrained"], test_accuracy["random"]
    assert pretrained > zero_shot + 0.15 and pretrained > random + 0.15, test_accuracy  # measured: 0.73, 0.50, 0.50


def test_the_same_seed_gives_the_same_numbers(checkpoint, data, tmp_path):
    for run in ("a", "b"):
        run_train(
            "--init-from", checkpoint, "--data", data, "--method", "vera", "--steps", "5", "--out", tmp_path / run
        )
    first, second = (json.loads((tmp_path / run / "data-vera-r256.json").read_text()) for run in ("a", "b"))
    assert first["losses"] == second["losses"] and first["accuracy"] == second["accuracy"]


@requires_tokenizer
def test_torchrun_with_two_processes_matches_one_process(checkpoint, data, tmp_path):
    common = ["--init-from", checkpoint, "--data", data, "--method", "lora,lorasb", "--steps", "6", "--batch-size",
              "8", "--lr", "0.01", "--no-save", "--eval-every", "0"]  # fmt: skip
    single = run_cli(*common, "--out", tmp_path / "one")
    assert single.returncode == 0, single.stderr
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]  # free port
    ddp = subprocess.run([*launcher, "train.py", *map(str, common), "--out", tmp_path / "two"], cwd=ROOT,
                         capture_output=True, text=True, env=env)  # fmt: skip
    assert ddp.returncode == 0, ddp.stderr
    for name in ("data-lora-r8.json", "data-lorasb-r8.json"):  # LoRA-SB: each process estimates the same first step
        one = json.loads((tmp_path / "one" / name).read_text())
        two = json.loads((tmp_path / "two" / name).read_text())
        assert two["processes"] == 2 and one["processes"] == 1
        # Same global batch, same gradients up to the order of float32 sums: 1e-4 relative after 6 Adam steps.
        torch.testing.assert_close(torch.tensor(two["losses"]), torch.tensor(one["losses"]), rtol=1e-4, atol=1e-5)
        assert two["accuracy"] == one["accuracy"]
    assert ddp.stdout.count("== data-lora-r8") == 1  # only rank 0 speaks


# ---------------------------------------------------------------- bad input


def test_bad_input_is_one_line_and_a_nonzero_exit(tmp_path):
    result = run_cli("--method", "dora", "--out", tmp_path)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "error: unknown method 'dora'; choose from none, full, lora, vera, loraxs, tinylora, lorasb or 'all'"
    ]
    assert "Traceback" not in result.stderr and not any(tmp_path.iterdir())


@requires_tokenizer  # train.py reads the task before it loads the model
def test_offline_gpt2_download_is_one_line(tmp_path):
    env = {**os.environ, "HF_ENDPOINT": "http://127.0.0.1:9", "LORAXS_MINI_CACHE": str(tmp_path / "cache")}
    result = subprocess.run([sys.executable, "train.py", "--out", tmp_path / "out"], cwd=ROOT, capture_output=True,
                            text=True, env=env)  # fmt: skip
    assert result.returncode == 1 and "Traceback" not in result.stderr
    (line,) = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert "could not download http://127.0.0.1:9/openai-community/gpt2/resolve/main/model.safetensors" in line


def write_jsonl(path, lines):
    path.mkdir(parents=True, exist_ok=True)
    for split in ("train", "test"):
        (path / f"{split}.jsonl").write_text("\n".join(lines) + "\n")
    return path


@pytest.mark.parametrize(
    "case, message",
    [
        ("rank_too_large", "transformer.h.0.attn.c_attn: LoRA-XS rank 33 is too large"),
        ("bad_rank", "--rank lora=8,dora=2: 'dora' is not one of lora, vera, loraxs, tinylora"),
        ("vera_alpha", "--alpha vera=2: 'vera' is not one of lora, loraxs"),
        ("unknown_target", "the target 'attn.q_proj' matches no linear layer"),
        ("missing_data", "no task or data file"),
        ("missing_checkpoint", "neither a preset"),
        ("not_gpt2", "model_type is 'bert'"),
        ("malformed_line", r"train.jsonl, line 2: not valid JSON"),
        ("too_long", r"train.jsonl, line 2: this example has 302 tokens, more than the model's context of 128"),
        ("nan_loss", "the loss became nan"),
        ("zero_steps", "argument --steps: must be a positive finite number"),
    ],
)
def test_bad_input_is_refused_clearly_and_writes_nothing(case, message, checkpoint, data, tmp_path, monkeypatch):
    args = {"--init-from": checkpoint, "--data": data, "--method": "loraxs", "--steps": "2"}
    if case == "rank_too_large":
        args["--rank"] = "33"
    elif case == "bad_rank":
        args["--rank"] = "lora=8,dora=2"
    elif case == "vera_alpha":
        args["--alpha"] = "vera=2"
    elif case == "unknown_target":
        args["--targets"] = "attn.c_attn,attn.q_proj"
    elif case == "missing_data":
        args["--data"] = tmp_path / "nowhere"
    elif case == "missing_checkpoint":
        args["--init-from"] = tmp_path / "no-model"
    elif case == "not_gpt2":
        folder = tmp_path / "bert"
        folder.mkdir()
        (folder / "config.json").write_text(json.dumps({"model_type": "bert"}))
        (folder / "model.safetensors").write_bytes((checkpoint / "model.safetensors").read_bytes())
        args["--init-from"] = folder
    elif case == "malformed_line":
        args["--data"] = write_jsonl(tmp_path / "bad", ['{"prompt": "a", "completion": " b"}', '{"prompt": "a",'])
    elif case == "too_long":
        short, long = ({"prompt": "word " * n, "completion": " x"} for n in (3, 300))
        args["--data"] = write_jsonl(tmp_path / "long", [json.dumps(line) for line in (short, long, short, short)])
        args["--batch-size"] = "2"
    elif case == "nan_loss":  # a loss that overflows, as a far too large rate makes it (--lr above 1 is refused)
        nan = torch.tensor(float("nan"), requires_grad=True)
        monkeypatch.setattr(torch.nn.functional, "cross_entropy", lambda *a, **k: nan * 1)
        args["--method"] = "full"
    elif case == "zero_steps":
        args["--steps"] = "0"
    out = tmp_path / "out"
    with pytest.raises(LoraxsError, match=message):
        run_train(*[part for pair in args.items() for part in pair], "--out", out)
    assert not out.exists()  # nothing half-written


def test_warnings_print_as_one_line_like_errors():
    code = (
        "import warnings\nfrom loraxs_mini.errors import friendly_errors\n"
        "with friendly_errors():\n    warnings.warn('the top-r subspace is barely defined')"
    )
    # In a process of its own: pytest's warning capture would swallow the warning here.
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert result.stderr == "warning: the top-r subspace is barely defined\n"


def command_outcome(capsys, *args):
    """(exit status, stderr) of train.py's main() under friendly_errors, as the command line runs it."""
    with pytest.raises(SystemExit) as exit_status:
        with train.friendly_errors():
            train.main([str(arg) for arg in args])
    return exit_status.value.code, capsys.readouterr().err


def write_lines(path, text):
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--device", "bogus"], "is not a device"),
        (["--device", "meta"], "cannot train there"),
        (["--device", "cuda:7"] if not torch.cuda.is_available() else ["--device", "cuda:999"], "cannot train there"),
        (["--epochs", "inf"], "argument --epochs: must be a positive finite number"),
        (["--epochs", "1e12"], "more than 10,000,000 steps"),
        (["--steps", str(10**12)], "more than 10,000,000"),
        (["--seed", str(2**64)], "seed must be a whole number from 0 to 2**63 - 1"),
        (["--lr", "nan"], "argument --lr: must be a positive finite number"),
        (["--lr", "1e300"], "argument --lr: 1e+300 is more than 1"),
        (["--batch-size", "100000"], "--batch-size 100000 is more than the 24 training examples"),
        (["--alpha", "nan"], "alpha must be a positive number"),
        (["--dropout", "1.5"], "dropout must be a number in [0, 1)"),
        (["--method", "lora", "--rank", "1000000000"], "LoRA rank 1000000000 is more than"),
        (["--method", "vera", "--rank", "1000000000"], "needs a shared random pair of 953.7 GiB"),
        (["--method", "lora,loraxs", "--rank", "64"], "transformer.h.0.attn.c_attn: LoRA rank 64"),
        (["--method", "tinylora", "--rank", "33"], "TinyLoRA rank 33 is too large"),
        (["--method", "tinylora", "--u", "0"], "u must be a positive whole number"),
        (["--method", "tinylora", "--weight-tying", "1.5"], "weight_tying must be a number in [0, 1]"),
        (["--method", "tinylora", "--u", "100000000"], "over 2 GiB; choose a smaller u"),
        (["--method", "loraxs", "--u", "4"], "--u is a setting of tinylora; add it to --method"),
        (["--method", "lorax"], "unknown method 'lorax' (did you mean loraxs?)"),
        (["--bogus-flag"], "unrecognized arguments: --bogus-flag"),
        (["--steps", "x"], "invalid int value: 'x'"),
        (["--rank", "eight"], "--rank eight: give whole numbers"),
    ],
)
def test_a_bad_command_line_is_one_error_line_exit_1_and_nothing_written(checkpoint, data, tmp_path, capsys, flags,
                                                                         message):  # fmt: skip
    out = tmp_path / "out"
    status, stderr = command_outcome(capsys, "--init-from", checkpoint, "--data", data, "--out", out, *flags)
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert status == 1 and len(errors) == 1 and message in errors[0] and "Traceback" not in stderr
    assert not out.exists()


def test_bad_output_paths_are_refused_before_anything_trains(checkpoint, data, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(train, "fine_tune", lambda *a, **k: pytest.fail("training started"))
    common = ["--init-from", checkpoint, "--data", data, "--method", "lora"]
    a_file = write_lines(tmp_path / "a-file", "not a folder")
    status, stderr = command_outcome(capsys, *common, "--out", a_file)
    assert status == 1 and "a-file is a file, not a folder" in stderr
    (tmp_path / "out" / "data-lora-r8.json").mkdir(parents=True)  # where the results file would go
    status, stderr = command_outcome(capsys, *common, "--out", tmp_path / "out")
    assert status == 1 and "data-lora-r8.json is a folder" in stderr


def test_a_stale_adapter_next_to_a_no_save_run_is_pointed_out(checkpoint, data, tmp_path):
    out = tmp_path / "out"
    common = ["--init-from", checkpoint, "--data", data, "--method", "lora", "--steps", "1", "--out", out]
    run_train(*common)
    with pytest.warns(UserWarning, match="is from an earlier run; with --no-save"):
        run_train(*common, "--no-save")


@pytest.mark.parametrize(
    "text, outcome",
    [
        ('{"prompt": "", "completion": " yes"}\n', "line 1: the prompt is empty"),
        ('{"prompt": "a", "completion": ""}\n', "line 1: the completion is empty"),
        ('{"prompt": ' + "[" * 100_000 + "]" * 100_000 + "}\n", "line 1: nested too deeply"),
        ('\ufeff{"prompt": "Is it?\u2028Yes\u0085", "completion": " yes"}\n', None),  # BOM, U+2028, U+0085: valid
    ],
)
def test_data_files_are_read_as_json_lines_are_defined(tmp_path, text, outcome):
    from loraxs_mini.data import read_jsonl

    path = write_lines(tmp_path / "data.jsonl", text)
    if outcome is None:
        (example,) = read_jsonl(path)
        assert example.prompt == "Is it?\u2028Yes\u0085"
    else:
        with pytest.raises(LoraxsError, match=outcome):
            read_jsonl(path)


def test_a_cache_folder_that_cannot_be_made_is_not_called_a_connection_problem(tmp_path, monkeypatch):
    from loraxs_mini.download import download_checkpoint

    monkeypatch.setenv("LORAXS_MINI_CACHE", str(write_lines(tmp_path / "a-file", "")))
    with pytest.raises(LoraxsError, match="cannot create the cache folder .* point LORAXS_MINI_CACHE"):
        download_checkpoint("gpt2")


def test_lorasb_and_a_loraxs_subspace_train_and_report_their_setup_time(checkpoint, data, tmp_path):
    out = tmp_path / "out"
    run_train("--init-from", checkpoint, "--data", data, "--method", "lorasb,loraxs", "--subspace", "random",
              "--rank", "2", "--steps", "8", "--lr", "0.02", "--batch-size", "8", "--out", out)  # fmt: skip
    results = {p.name: json.loads(p.read_text()) for p in out.glob("*.json") if not p.name.startswith("comparison")}
    lorasb, loraxs = results["data-lorasb-r2.json"], results["data-loraxs-random-r2.json"]  # not the top's file
    for result in (lorasb, loraxs):
        assert 0 < result["setup_seconds"] < result["wall_seconds"]
    assert loraxs["adapter_config"]["subspace"] == "random" and "subspace" not in lorasb["adapter_config"]
    assert lorasb["trainable_parameters"] == loraxs["trainable_parameters"] == 2 * 2 * 4 * 2  # r² x 4 layers x 2 blocks
    assert lorasb["initial_change"] > 0  # LoRA-SB starts one (estimated) step of full fine-tuning away from W


def test_subspace_is_refused_for_a_command_without_loraxs():
    with pytest.raises(LoraxsError, match="--subspace is a setting of loraxs; add it to --method or leave it out"):
        plan_runs(parse_args(["--method", "lora", "--subspace", "bottom"]))


def test_the_default_run_train_py_states_is_the_recipe():
    from loraxs_mini.recipe import DEFAULT_BATCH_SIZE, GRAD_CLIP, learning_rate_at

    said = " ".join((ROOT / "train.py").read_text().split())
    stated = (
        f"The default run: {DEFAULT_STEPS} steps of {DEFAULT_BATCH_SIZE} examples, the gradient's norm clipped "
        f"to {GRAD_CLIP}, the learning rate warmed up over the first tenth of the steps and decayed linearly"
    )
    assert stated in said
    tenth = DEFAULT_STEPS // 10
    assert learning_rate_at(tenth - 1, DEFAULT_STEPS, 1.0) == 1.0 > learning_rate_at(tenth - 2, DEFAULT_STEPS, 1.0)
    assert learning_rate_at(DEFAULT_STEPS - 1, DEFAULT_STEPS, 1.0) == pytest.approx(1 / (DEFAULT_STEPS - tenth))
