"""Seeds and rank sweeps in train.py: the plan, the shared work, the aggregate files, the words, and bad input."""

import copy
import csv
import json
import statistics

import pytest
import torch

import train
from conftest import tiny_gpt
from loraxs_mini import LoraxsError, evaluate
from loraxs_mini.adapters import EVERY_LINEAR_SPLIT_QKV, METHODS, SVDCache, adapted_layers, add_adapters
from loraxs_mini.compare import aggregate, budget_caveat, spread, still_improving, summary, write_comparison
from loraxs_mini.recipe import default_learning_rate


def run_train(*args):
    return train.main([str(arg) for arg in args])


def seed_of(result):
    return result["seed"]


def test_a_tiny_sweep_writes_an_aggregate_that_matches_its_runs(tmp_path, monkeypatch):
    loads = []
    real_load = train.base_model
    monkeypatch.setattr(train, "base_model", lambda *a, **k: loads.append(a) or real_load(*a, **k))
    out = tmp_path / "out"
    run_train("--init-from", "random:tiny", "--method", "lora,loraxs", "--rank", "lora=2,4", "loraxs=2,4",
              "--seeds", "2", "--steps", "3", "--lr", "0.05", "--no-save", "--out", out)  # fmt: skip
    assert len(loads) == 1  # one base model for the 8 runs, copied for each
    runs = {path.stem: json.loads(path.read_text()) for path in out.glob("sentiment-*-seed*.json")}
    assert sorted(runs) == [f"sentiment-{m}-r{r}-seed{s}" for m in ("lora", "loraxs") for r in (2, 4) for s in (0, 1)]
    assert {run["seed"] for run in runs.values()} == {0, 1}

    aggregate_json = json.loads((out / "comparison-sentiment.json").read_text())
    rows = {(row["method"], row["rank"]): row for row in aggregate_json["rows"]}
    assert sorted(rows) == [("lora", 2), ("lora", 4), ("loraxs", 2), ("loraxs", 4)]
    with open(out / "comparison-sentiment.csv") as file:
        csv_rows = {(row["method"], int(row["rank"])): row for row in csv.DictReader(file)}
    table = (out / "comparison-sentiment.md").read_text()
    for (method, rank), row in rows.items():
        own = sorted((run for run in runs.values() if (run["method"], run["rank"]) == (method, rank)), key=seed_of)
        test = [run["accuracy"]["test"] for run in own]
        assert row["test"]["values"] == test and row["seeds"] == [0, 1]
        assert row["test"]["mean"] == pytest.approx(statistics.mean(test))
        assert row["test"]["std"] == pytest.approx(statistics.stdev(test))
        assert row["trainable_parameters"] == own[0]["trainable_parameters"]
        assert float(csv_rows[method, rank]["test_mean"]) == pytest.approx(statistics.mean(test))
        assert float(csv_rows[method, rank]["test_std"]) == pytest.approx(statistics.stdev(test))
        assert f"| {method} | {rank} | {own[0]['trainable_parameters']:,} |" in table
    rows_of_table = "".join(line for line in table.splitlines() if line.startswith("| lora"))
    assert rows_of_table.count(" ± ") == 2 * 4  # test and validation accuracy of every configuration
    assert aggregate_json["summary"] and "lora r=" in aggregate_json["summary"][0]
    assert (out / "comparison-sentiment.png").stat().st_size > 0 or pytest.importorskip("matplotlib") is None
    # The learning curves: every run scored at steps 0 (zero-shot), 1, 2 (every step: 3 // 6 rounds up to 1), 3 (end).
    for (method, rank), row in rows.items():
        own = sorted((run for run in runs.values() if (run["method"], run["rank"]) == (method, rank)), key=seed_of)
        assert [point["step"] for point in own[0]["evaluations"]] == [0, 1, 2, 3]
        assert own[0]["evaluations"][-1]["validation"] == own[0]["accuracy"]["validation"]
        assert [point["step"] for point in row["curve"]] == [0, 1, 2, 3]
        at_2 = statistics.mean(run["evaluations"][2]["validation"] for run in own)
        assert row["curve"][2]["validation"]["mean"] == pytest.approx(at_2)
        assert f"2:{at_2:.4f}" in csv_rows[method, rank]["validation_curve"]
    assert (out / "curves-sentiment.png").stat().st_size > 0 or pytest.importorskip("matplotlib") is None


def test_scoring_during_training_changes_neither_the_weights_nor_the_data_order(tmp_path):
    common = ["--init-from", "random:tiny", "--task", "plural", "--method", "loraxs", "--steps", "6", "--lr", "0.05"]
    run_train(*common, "--eval-every", "0", "--out", tmp_path / "without")
    run_train(*common, "--eval-every", "2", "--out", tmp_path / "with")
    without, scored = (
        json.loads((tmp_path / run / "plural-loraxs-r8.json").read_text()) for run in ("without", "with")
    )
    assert without["evaluations"] == [] and [point["step"] for point in scored["evaluations"]] == [0, 2, 4, 6]
    assert scored["losses"] == without["losses"] and scored["accuracy"] == without["accuracy"]
    bytes_of = [(tmp_path / run / "plural-loraxs-r8.safetensors").read_bytes() for run in ("without", "with")]
    assert bytes_of[0] == bytes_of[1]  # the same trained R, bit for bit


def test_the_summary_says_which_methods_were_still_improving():
    def curved(method, at_80, last):
        points = [{"step": 0, "validation": spread([0.5, 0.5])}, {"step": 120, "validation": spread(at_80)}]
        points += [{"step": 150, "validation": spread(last)}]
        return {**row(method, [0.8, 0.82]), "curve": points}

    rising, flat = curved("loraxs", [0.60, 0.62], [0.75, 0.77]), curved("lora", [0.80, 0.82], [0.81, 0.83])
    lines = summary([rising, flat])
    assert lines[-1].startswith("Still improving at the end of the budget") and "loraxs r=8 (+0.150" in lines[-1]
    assert "lora r=8 (" not in lines[-1]
    assert not summary([flat, curved("vera", [0.5, 0.7], [0.6, 0.8])])[-1].startswith("Still")  # within the spread


def test_zero_shot_is_scored_once_unless_a_start_moves_the_model(tmp_path, monkeypatch):
    scored = []
    real_accuracy = evaluate.accuracy  # what train.py scores with, directly and through evaluate.scores
    monkeypatch.setattr(evaluate, "accuracy", lambda *a, **k: scored.append(a[2]) or real_accuracy(*a, **k))
    common = ["--init-from", "random:tiny", "--steps", "1", "--no-save"]
    run_train(*common, "--method", "lora,vera,loraxs", "--out", tmp_path / "a")
    assert len(scored) == 2 + 3 * 2  # zero-shot once (validation, test), then each trained model
    results = [json.loads(path.read_text()) for path in (tmp_path / "a").glob("*.json")]
    changes = {result["method"]: result["initial_change"] for result in results if "method" in result}
    assert changes["lora"] == 0 and changes["vera"] == 0  # B = 0, b = 0: exactly the base model
    assert 0 < changes["loraxs"] < evaluate.ZERO_SHOT_TOLERANCE  # R ~ N(0, 1e-5²)
    scored.clear()
    run_train(*common, "--method", "loraxs", "--alpha", "1e9", "--out", tmp_path / "b")  # a start far from the base
    (result,) = [json.loads(path.read_text()) for path in (tmp_path / "b").glob("*.json")]
    assert result["initial_change"] > evaluate.ZERO_SHOT_TOLERANCE
    assert len(scored) == 2 + 2 + 2  # the base's zero-shot, this start's own, and after training


@pytest.mark.parametrize("svd", ["gram", "svd"])
def test_the_cached_svd_gives_the_same_a_and_b_as_a_fresh_one_at_every_rank(svd):
    base = tiny_gpt()
    cache = SVDCache(max_rank=16)
    for rank in (1, 2, 8, 16):
        for targets in (None, EVERY_LINEAR_SPLIT_QKV):
            cached = add_adapters(copy.deepcopy(base), "loraxs", rank=rank, targets=targets, svd=svd, svd_cache=cache)
            fresh = add_adapters(copy.deepcopy(base), "loraxs", rank=rank, targets=targets, svd=svd)
            pairs = zip(adapted_layers(cached).values(), adapted_layers(fresh).values())
            for one, other in pairs:  # the same up to float32 rounding (W V computed with another width)
                torch.testing.assert_close(one.B, other.B, atol=1e-6, rtol=0)
                torch.testing.assert_close(one.A, other.A, atol=1e-6, rtol=0)
                assert one.gap == pytest.approx(other.gap, rel=1e-5)
    assert len(cache.triplets) == 2 * (4 + 3)  # one SVD per matrix (c_attn and its thirds too), for all ranks


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--method", "loraxs", "--rank", "loraxs=2,64"], "transformer.h.0.attn.c_attn: LoRA-XS rank 64 is too large"),
        (["--method", "lora", "--rank", "lora="], "an empty value for lora"),
        (["--method", "lora", "--seeds", "0"], "--seeds must be between 1 and 100"),
        (["--method", "lora", "--seeds", "1000000000"], "--seeds must be between 1 and 100"),
        (["--method", "lora", "--seeds", "1,1"], "give different seeds"),
        (["--method", "lora,vera,lora"], "--method lists lora twice"),
        (["--method", "lora", "--rank", "lora=2", "lora=4"], "lora is listed twice"),
        (["--method", "lora", "--rank", "lora=2,2"], "a rank of lora is listed twice"),
        (["--method", "lora", "--rank", "2", "lora=4"], "begin with a method name"),
        (["--method", "lora", "--alpha", "lora=8,16"], "one alpha per method"),
    ],
)
def test_bad_sweep_input_is_refused_before_anything_trains(flags, message, tmp_path, monkeypatch):
    monkeypatch.setattr(train, "fine_tune", lambda *a, **k: pytest.fail("training started"))
    out = tmp_path / "out"
    with pytest.raises(LoraxsError, match=message):
        run_train("--init-from", "random:tiny", *flags, "--out", out)
    assert not out.exists()


def row(method, test, validation=None):
    values = {"mean": statistics.mean(test), "std": statistics.stdev(test) if len(test) > 1 else None}
    validation = values if validation is None else validation
    return {"method": method, "rank": 8, "label": f"{method} r=8", "test": values, "validation": validation}


def test_the_summary_ranks_only_what_the_spread_allows():
    clear, overlapping = row("lora", [0.90, 0.92]), row("loraxs", [0.70, 0.72])
    takeaway, line = summary([clear, overlapping])
    assert line.startswith("lora r=8 beats loraxs r=8: 0.910 ± 0.014 against 0.710 ± 0.014")
    assert takeaway == "In one line: lora r=8 scores highest on test (0.910 ± 0.014); loraxs r=8 is behind it."
    takeaway, line = summary([row("lora", [0.80, 0.92]), row("vera", [0.78, 0.86])])
    assert "lora r=8 and vera r=8 cannot be ranked" in line and "a difference of 0.040" in line
    assert takeaway.endswith("(0.860 ± 0.085); vera r=8 cannot be told apart from it.")
    assert "no spread" in summary([row("lora", [0.9]), row("vera", [0.5])])[0]


def test_each_method_is_represented_by_its_best_configuration_on_validation():
    high_val_low_test = row("lora", [0.50, 0.52], validation={"mean": 0.99, "std": 0.0})
    low_val_high_test = row("lora", [0.95, 0.97], validation={"mean": 0.10, "std": 0.0})
    _, line = summary([high_val_low_test, low_val_high_test, row("vera", [0.70, 0.72])])
    assert line.startswith("vera r=8 beats lora r=8: 0.710 ± 0.014 against 0.510 ± 0.014")  # chosen on validation


def test_a_comparison_on_another_budget_than_the_rates_were_chosen_for_says_so():
    assert budget_caveat(150, 16) is None
    assert budget_caveat(40, 16).startswith("Caveat: this comparison ran 40 steps of 16 examples; the learning rates")


def test_aggregate_orders_rows_by_method_then_rank():
    results = [
        {"method": m, "rank": r, "seed": 0, "trainable_parameters": 1, "trainable_share": 0.1, "adapter_bytes": 0,
         "zero_shot_accuracy": {"test": 0.5}, "accuracy": {"test": 0.6, "validation": 0.6}, "training_seconds": 1.0}
        for m, r in (("loraxs", 8), ("lora", 16), ("full", None), ("lora", 2))
    ]  # fmt: skip
    assert [(r["method"], r["rank"]) for r in aggregate(results)] == [("full", None), ("lora", 2), ("lora", 16),
                                                                       ("loraxs", 8)]  # fmt: skip


def test_each_rank_gets_the_rate_measured_at_it_or_at_the_nearest_measured_rank():
    for name, method in METHODS.items():
        for rank, rate in method.learning_rates.items():
            assert default_learning_rate(name, rank) == rate  # a measured rank gets its own rate
    assert default_learning_rate("none") == 0.0  # nothing trains
    lora = METHODS["lora"].learning_rates
    assert default_learning_rate("lora") == lora[8]  # no rank: the method's default rank
    # Nearest in log r: 11 is nearer 8 than 16 (11/8 < 16/11), 12 nearer 16 (16/12 < 12/8); beyond the ends, the end.
    assert default_learning_rate("lora", 11) == lora[8] and default_learning_rate("lora", 12) == lora[16]
    assert default_learning_rate("lora", 64) == lora[16] and default_learning_rate("lora", 1) == lora[1]
    assert default_learning_rate("full") == METHODS["full"].learning_rates[None]
    assert default_learning_rate("none") == 0.0  # nothing trains


def test_a_method_has_one_colour_in_every_figure_and_equal_counts_stand_apart(monkeypatch, tmp_path):
    pytest.importorskip("matplotlib")
    from matplotlib.colors import to_hex

    from loraxs_mini import compare

    figures = []
    monkeypatch.setattr(compare, "save", lambda figure, path: figures.append(figure) or path)

    def row(method, rank, count):
        losses = {"mean": [2.0, 1.5, 1.0], "low": [2.0, 1.4, 0.9], "high": [2.1, 1.6, 1.1]}
        curve = [{"step": step, "validation": {"mean": 0.5, "std": 0.1}} for step in (0, 3)]
        return {
            "method": method,
            "rank": rank,
            "label": f"{method} r={rank}",
            "trainable_parameters": count,
            "test": {"mean": 0.7, "std": 0.05},
            "losses": losses,
            "curve": curve,
        }

    rows = [
        row("lora", 1, 4096),
        row("lora", 2, 8192),
        row("loraxs", 8, 512),
        row("tinylora", 8, 512),
        row("lorasb", 8, 512),
        row("full", None, 10**6),
    ]
    compare.plot(rows, tmp_path / "accuracy.png", "title")
    compare.plot_curves(rows, tmp_path / "curves.png", "title")
    accuracy, curves = figures
    points = {container.get_label().split(",")[0]: container.lines[0] for container in accuracy.axes[0].containers}
    for panel in curves.axes:  # loss and validation accuracy: each line in its method's colour
        for line in panel.get_lines():
            method = line.get_label().split()[0]
            assert to_hex(line.get_color()) == to_hex(points.get(method, points["full fine-tuning"]).get_color())
    assert len({to_hex(line.get_color()) for line in points.values()}) == len(points)  # no two methods share one
    at_512 = sorted(points[method].get_xdata()[0] for method in ("loraxs", "tinylora", "lorasb"))
    assert at_512[0] < at_512[1] < at_512[2] and at_512[0] > 0.8 * 512 and at_512[2] < 1.2 * 512  # apart, near 512
    assert points["lora"].get_xdata().tolist() == [4096, 8192]  # a count no other method has stays where it is


def record(method, rank, seed, test=0.8, task="sentiment", evaluations=(), **settings):
    """A run's record as train.py writes it (docs/results.md), with the fields a comparison reads."""
    config = {
        "method": method,
        "rank": rank,
        "alpha": None,
        "targets": None,
        "dropout": 0.0,
        "seed": seed,
        "svd": "gram",
        **settings,
    }
    return {
        "task": task,
        "method": method,
        "rank": rank,
        "seed": seed,
        "adapter_config": config,
        "base_model": "tiny",
        "steps": 3,
        "batch_size": 16,
        "learning_rate": 1e-2,
        "trainable_parameters": 64 * (rank or 1),
        "trainable_share": 0.01,
        "adapter_bytes": 100,
        "zero_shot_accuracy": {"validation": 0.5, "test": 0.5},
        "accuracy": {"validation": test, "test": test},
        "training_seconds": 1.0,
        "losses": [2.0, 1.0],
        "evaluations": list(evaluations),
    }


def test_runs_that_differ_in_a_setting_are_two_rows_named_by_it(tmp_path):
    runs = [record("loraxs", 8, seed, subspace=subspace) for subspace in ("top", "random") for seed in (0, 1)]
    rows = aggregate(runs)
    assert [row["label"] for row in rows] == ["loraxs r=8 subspace=random", "loraxs r=8 subspace=top"]
    assert [row["seeds"] for row in rows] == [[0, 1], [0, 1]]
    table, _, _ = write_comparison(runs, tmp_path / "c", "sentiment")
    assert "| loraxs (subspace=random) | 8 |" in table


def test_a_comparison_of_one_setting_says_it_in_its_title(tmp_path):
    runs = [record("loraxs", 8, seed, subspace="bottom") for seed in (0, 1)]
    write_comparison(runs, tmp_path / "c", "sentiment on tiny")
    assert (tmp_path / "c.md").read_text().startswith("sentiment on tiny; subspace=bottom")


@pytest.mark.parametrize(
    "runs, message",
    [
        ([], "there are no runs to compare"),
        ([record("lora", 8, 0), record("lora", 8, 0, task="plural")], r"of 2 tasks \(plural, sentiment\)"),
        ([record("lora", 8, 0), record("lora", 8, 0)], "lora r=8: seed 0 is given twice"),
        ([record("lora", 8, 0, test=float("nan"))], "run 1 of the 1 is not a run's record"),
    ],
    ids=["no runs", "two tasks", "one run twice", "a NaN accuracy"],
)
def test_a_comparison_refuses_what_it_cannot_compare_in_one_line_and_writes_nothing(runs, message, tmp_path):
    with pytest.raises(LoraxsError, match=message):
        write_comparison(runs, tmp_path / "c", "title")
    assert list(tmp_path.iterdir()) == []


def test_runs_of_a_method_this_process_does_not_know_and_without_curves_compare(tmp_path):
    runs = [record("dora", 4, seed, test=0.7 + seed / 10) for seed in (0, 1)]
    runs += [{**record("lora", 4, seed), "evaluations": None} for seed in (0, 1)]
    table, words, _ = write_comparison(runs, tmp_path / "c", "title")
    assert "| lora | 4 |" in table and "| dora | 4 |" in table and words


def test_still_improving_needs_three_points_of_a_curve():
    def rising(points):
        steps = [0, 25, 50][-points:] if points < 3 else [0, 25, 50]
        return [
            record(
                "lora",
                8,
                seed,
                evaluations=[{"step": step, "validation": 0.2 + step / 100 + seed / 100} for step in steps],
            )
            for seed in (0, 1)
        ]

    assert still_improving(aggregate(rising(3)))  # from 0.2 to 0.7 over its last points: rising
    assert not still_improving(aggregate(rising(2)))  # step 0 and the end alone: no last fifth to speak of
