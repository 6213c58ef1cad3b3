"""The benchmark runs end to end (on the tiny shape), with and without the reference libraries."""

import re
import subprocess
import sys

import pytest

from conftest import ROOT
from loraxs_mini import bench

QUICK = ["--shape", "tiny", "--steps", "1", "--warmup", "1", "--no-xl", "--workload", "finetune"]


def rows(report, section):
    """The configuration names of the Markdown table under a heading that starts with `section`."""
    table = report.split(section, 1)[1].split("\n\n", 2)[1]
    return [line.split("|")[1].strip() for line in table.splitlines()[2:]]


def test_our_rows_only_without_the_reference_libraries(capsys, tmp_path, monkeypatch):
    monkeypatch.setattr(bench, "have_reference", lambda: False)  # as on a machine without transformers / peft
    assert bench.main(QUICK + ["--out", str(tmp_path / "bench.md")]) == 0
    report = (tmp_path / "bench.md").read_text()
    assert report.strip() in capsys.readouterr().out
    assert rows(report, "Training step") == ["full", "lora", "vera", "loraxs", "tinylora", "lorasb"]
    assert "our rows only" in report
    assert rows(report, "LoRA-XS set-up") == ["tiny"] * 3  # one row per SVD method
    assert rows(report, "Inference") == ["plain", "loraxs, not merged", "loraxs, merged"]
    for size in re.findall(r"\| ([\d.]+) GiB \|", report):
        assert 0.05 < float(size) < 4  # a fresh process per configuration, not the test runner's memory


def test_reference_rows_and_ratios_with_transformers_and_peft(tmp_path):
    pytest.importorskip("peft")
    pytest.importorskip("transformers")
    bench.main(QUICK + ["--no-memory", "--out", str(tmp_path / "bench.md")])  # memory: the test above
    report = (tmp_path / "bench.md").read_text()
    names = rows(report, "Training step")
    ours = ["full", "lora", "vera", "loraxs", "tinylora", "lorasb"]
    assert names == ours + ["hf-full", "peft-lora", "peft-vera", "peft-loraxs"]
    table = report.split("Training step", 1)[1].split("\n\n", 2)[1].splitlines()[2:]
    trainable = {line.split("|")[1].strip(): int(line.split("|")[2].replace(",", "")) for line in table}
    assert trainable["peft-lora"] == trainable["lora"] and trainable["peft-vera"] == trainable["vera"]
    assert trainable["peft-loraxs"] == trainable["loraxs"]  # the paper's layout trains the same r x r matrices
    assert all(re.search(r"\| \d+\.\d\dx \|", line) for line in table)


def test_the_paper_style_reference_trains_only_r(tmp_path):
    pytest.importorskip("peft")
    batch = bench.random_batch(2, 16, "finetune", "cpu")
    model, loss = bench.build("peft-loraxs", "tiny", 4, batch, "cpu")
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(name.endswith("loraxs_R.weight") for name in trainable)
    loss().backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


def test_both_workloads_score_the_same_positions_in_both_models():
    idx, targets, labels = bench.random_batch(2, 16, "finetune", "cpu")
    assert (targets != -100).sum() == 2 * 4  # the last quarter of each sequence
    # transformers predicts label t at position t - 1: the same tokens as our shifted targets
    assert (labels[:, 1:] == targets[:, :-1]).all()
    _, all_targets, _ = bench.random_batch(2, 16, "lm", "cpu")
    assert (all_targets != -100).sum() == 2 * 15


def test_throughput_and_mfu_follow_the_flop_count(tmp_path):
    # The GPU section, run on the CPU with a made-up peak of 1 TFLOP/s so that MFU is printed.
    bench.main(QUICK + ["--no-memory", "--no-reference", "--seq-len", "16", "--throughput", "--peak-tflops", "1",
                        "--out", str(tmp_path / "bench.md")])  # fmt: skip
    report = (tmp_path / "bench.md").read_text()
    assert rows(report, "Throughput") == ["full", "loraxs"]
    table = report.split("Throughput", 1)[1].split("\n\n", 2)[1].splitlines()[2:]
    # tiny: L = 2, C = 32, N = 1,637,792 parameters (the tied embedding once); T = 16
    N, attention = 1_637_792, 12 * 2 * 32 * 16
    expected = {"full": 6 * N + attention, "loraxs": 4 * N + attention}  # a frozen base needs no weight gradients
    for line in table:
        name, tokens, per_token, mfu = (cell.strip() for cell in line.split("|")[1:5])
        assert int(per_token.replace(",", "")) == expected[name]
        tokens_per_second = float(tokens.replace(",", ""))
        assert float(mfu.rstrip("%")) == pytest.approx(100 * expected[name] * tokens_per_second / 1e12, abs=0.06)


@pytest.mark.parametrize(
    "arguments, message",
    [
        (["--shape", "tiny", "--seq-len", "1000"], "--seq-len 1000 is longer than tiny's context; use at most 128"),
        (["--shape", "tiny", "--rank", "0"], "--rank must be at least 1, got 0"),
        (["--shape", "tiny", "--rank", "40"], "LoRA rank 40 is more than a 96 x 32 layer can use"),
    ],
)
def test_bad_input_is_one_line_and_exit_status_1(arguments, message):
    result = subprocess.run([sys.executable, "-m", "loraxs_mini.bench", *arguments, "--no-reference"],
                            capture_output=True, text=True, cwd=ROOT)  # fmt: skip
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.startswith("error: ") and message in result.stderr
