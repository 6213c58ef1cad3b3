"""
Comparing runs: many runs in (methods x ranks x seeds), one honest summary out.

The runs are grouped by configuration, (method, rank), and each accuracy is
reported as the mean and standard deviation over the seeds:

    mean = (1/n) Σ a_i          std = sqrt(Σ (a_i - mean)² / (n - 1))          n seeds

One seed gives no spread, and a difference between two methods means nothing
until it is larger than the spread. Here two methods are ranked only when
their error bars do not overlap,

    |mean_a - mean_b| > std_a + std_b,

comparing each method's best configuration, chosen on the validation split,
by its test accuracy. The summary opens with one line a student can repeat
(who scores highest, who cannot be told apart from it, who is behind), and
ends with a caveat when the budget is not the one the rates were chosen for.

Out come a Markdown table, the same numbers as JSON and CSV, the summary in
plain words, and, with matplotlib, the curve the LoRA-XS paper draws: test
accuracy against trainable parameters (log scale), one line per method; and
the learning curves, loss and validation accuracy against step.
"""

import csv
import io
import itertools
import json
import statistics

from .adapters import METHODS
from .errors import LoraxsError, is_number
from .files import atomic_write
from .measure import human_bytes, human_seconds
from .recipe import DEFAULT_BATCH_SIZE, DEFAULT_STEPS


def spread(values):
    """{mean, std, values}; std is None for a single value (one seed: no spread)."""
    return {
        "mean": statistics.mean(values),
        "std": statistics.stdev(values) if len(values) > 1 else None,
        "values": values,
    }


def aggregate(results):
    """
    One row per configuration, every seed's results in it: runs are one configuration when they differ in their
    seed alone (task, model, method, every setting of its AdapterConfig, steps, batch and rate all equal). Rows come
    in the registry's order of methods (methods it does not know, from older runs, after them), then by rank.
    """
    check_runs(results)
    groups = {}
    for result in results:
        groups.setdefault(configuration(result), []).append(result)
    labels = settings_labels([runs[0] for runs in groups.values()])
    order = [*METHODS, *sorted({result["method"] for result in results} - METHODS.keys())]

    def place(item):
        key, runs = item
        return order.index(runs[0]["method"]), runs[0]["rank"] or 0, labels[key]

    rows = []
    for key, runs in sorted(groups.items(), key=place):
        first, settings = runs[0], labels[key]
        label = (
            first["method"] + (f" r={first['rank']}" if first["rank"] else "") + (f" {settings}" if settings else "")
        )
        seeds = [run["seed"] for run in runs]
        if len(set(seeds)) < len(seeds):
            twice = max(seeds, key=seeds.count)
            raise LoraxsError(f"{label}: seed {twice} is given twice (the same run's results twice?); give each once")
        rows.append(
            {
                "method": first["method"],
                "rank": first["rank"],
                "settings": settings,
                "label": label,
                "trainable_parameters": first["trainable_parameters"],
                "trainable_share": first["trainable_share"],
                "adapter_bytes": first["adapter_bytes"] or None,
                "seeds": seeds,
                "zero_shot_test": first["zero_shot_accuracy"]["test"],
                "test": spread([run["accuracy"]["test"] for run in runs]),
                "validation": spread([run["accuracy"]["validation"] for run in runs]),
                "training_seconds": statistics.mean(run["training_seconds"] for run in runs),
                "curve": curve([run.get("evaluations") or [] for run in runs]),
                "losses": loss_band([run.get("losses") or [] for run in runs]),
            }
        )
    return rows


def check_runs(results):
    """Runs of one task, each a record as train.py writes it (docs/results.md): else one line saying which is not."""
    if not results:
        raise LoraxsError("there are no runs to compare: give the results of at least one run")
    tasks = sorted({result.get("task") for result in results if isinstance(result, dict)}, key=str)
    if len(tasks) > 1:
        raise LoraxsError(
            f"the runs are of {len(tasks)} tasks ({', '.join(map(str, tasks))}); compare one task at a time"
        )
    for number, result in enumerate(results, 1):
        if not isinstance(result, dict):
            accuracies = [None]
        else:  # what a comparison reads of a run's accuracies
            accuracies = [result.get("accuracy", {}).get(split) for split in ("validation", "test")]
            accuracies.append(result.get("zero_shot_accuracy", {}).get("test"))
        if not all(is_number(value) and 0 <= value <= 1 for value in accuracies):
            raise LoraxsError(
                f"run {number} of the {len(results)} is not a run's record (docs/results.md): its accuracies are "
                "not numbers from 0 to 1"
            )


def configuration(result):
    """Everything that tells a run's configuration from another's: all it records of itself but the seed."""
    settings = {name: value for name, value in (result.get("adapter_config") or {}).items() if name != "seed"}
    fields = ("task", "method", "rank", "base_model", "steps", "batch_size", "learning_rate")
    return json.dumps([*(result.get(field) for field in fields), settings], sort_keys=True)


def settings_labels(firsts):
    """
    configuration -> the settings that tell it apart, in words ("subspace=bottom lr=0.03"): every setting whose value
    differs between configurations of one method and rank, and every own setting of a method away from its default.
    """

    def values(run):
        config = {
            name: value
            for name, value in (run.get("adapter_config") or {}).items()
            if name not in ("method", "rank", "seed")
        }
        return {**config, "lr": run.get("learning_rate"), "steps": run.get("steps")}

    labels = {}
    for run in firsts:
        same = [other for other in firsts if (other["method"], other["rank"]) == (run["method"], run["rank"])]
        method = METHODS.get(run["method"])
        words = []
        for name, value in values(run).items():
            varies = any(values(other).get(name) != value for other in same)
            unusual = method is not None and name in method.settings and method.settings[name].default != value
            if varies or unusual:
                words.append(f"{name}={','.join(value) if isinstance(value, list) else value}")
        labels[configuration(run)] = " ".join(words)
    return labels


def curve(evaluations):
    """The validation accuracy at each step every seed was scored at: [{step, validation: {mean, std, values}}]."""
    steps = sorted(set.intersection(*({point["step"] for point in points} for points in evaluations)))
    by_step = [{point["step"]: point["validation"] for point in points} for points in evaluations]
    return [{"step": step, "validation": spread([seed[step] for seed in by_step])} for step in steps]


def loss_band(losses):
    """Each step's training loss over the seeds: {mean, low, high} lists (the steps every seed has)."""
    steps = min(len(seed) for seed in losses)
    per_step = [[seed[step] for seed in losses] for step in range(steps)]
    return {
        "mean": [statistics.mean(values) for values in per_step],
        "low": [min(values) for values in per_step],
        "high": [max(values) for values in per_step],
    }


def still_improving(rows):
    """
    The methods (each at its best configuration) whose validation accuracy still rose over the last fifth of the
    budget by more than the seed spread: mean(last) - mean(at 80%) > std(last) + std(at 80%). Needs 2+ seeds and 3+
    points of the curve (step 0 and the end alone are no curve).
    """
    rising = []
    for row in best_rows(rows).values():
        points = row.get("curve", [])
        if len(points) < 3 or points[-1]["validation"]["std"] is None:  # step 0 and the end alone are no curve
            continue
        last = points[-1]
        fifth = min(points[:-1], key=lambda point: abs(point["step"] - 0.8 * last["step"]))
        gain = last["validation"]["mean"] - fifth["validation"]["mean"]
        if gain > last["validation"]["std"] + fifth["validation"]["std"]:
            rising.append(f"{row['label']} (+{gain:.3f} from step {fifth['step']} to {last['step']})")
    return rising


def mean_and_spread(accuracy):
    return f"{accuracy['mean']:.3f}" + (f" ± {accuracy['std']:.3f}" if accuracy["std"] is not None else "")


def table(rows):
    lines = [
        "| method | rank | trainable parameters | share of the model | adapter on disk | zero-shot test acc. "
        "| test acc. | validation acc. | seeds | training time |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        size = human_bytes(row["adapter_bytes"]) if row["adapter_bytes"] else "-"
        settings = f" ({row['settings']})" if row.get("settings") else ""
        lines.append(
            f"| {row['method']}{settings} | {row['rank'] or '-'} | {row['trainable_parameters']:,} "
            f"| {100 * row['trainable_share']:.4g}% | {size} | {row['zero_shot_test']:.3f} "
            f"| {mean_and_spread(row['test'])} | {mean_and_spread(row['validation'])} | {len(row['seeds'])} "
            f"| {human_seconds(row['training_seconds'])} |"
        )
    return "\n".join(lines) + "\n"


def summary(rows):
    """Sentences: for each pair of methods, is the difference in test accuracy larger than the spread?"""
    if any(row["test"]["std"] is None for row in rows):
        return ["One seed per configuration: no spread to judge the differences by. Run with --seeds 3 to rank."]
    best = best_rows(rows)
    lines = [takeaway(list(best.values()))]
    for a, b in itertools.combinations(best.values(), 2):
        if b["test"]["mean"] > a["test"]["mean"]:
            a, b = b, a
        difference, spreads = a["test"]["mean"] - b["test"]["mean"], a["test"]["std"] + b["test"]["std"]
        scores = f"{mean_and_spread(a['test'])} against {mean_and_spread(b['test'])}"
        if beats(a, b):
            lines.append(
                f"{a['label']} beats {b['label']}: {scores}, a difference of {difference:.3f}, "
                f"more than their spreads together ({spreads:.3f})."
            )
        else:
            lines.append(
                f"{a['label']} and {b['label']} cannot be ranked: {scores}, a difference of {difference:.3f}, "
                f"within their spreads together ({spreads:.3f})."
            )
    rising = still_improving(rows)
    if rising:
        lines.append(
            f"Still improving at the end of the budget (validation accuracy rose over its last fifth by more than the "
            f"seed spread): {', '.join(rising)}. A longer run may change where they stand."
        )
    return lines


def best_rows(rows):
    """method -> its configuration with the best mean validation accuracy."""
    best = {}
    for row in rows:
        if row["method"] not in best or row["validation"]["mean"] > best[row["method"]]["validation"]["mean"]:
            best[row["method"]] = row
    return best


def takeaway(best):
    """One line a student can repeat: the top test score, and who cannot be told apart from it by the rule above."""
    leader = max(best, key=lambda row: row["test"]["mean"])
    level = [row["label"] for row in best if row is not leader and not beats(leader, row)]
    behind = [row["label"] for row in best if row is not leader and beats(leader, row)]
    line = f"In one line: {leader['label']} scores highest on test ({mean_and_spread(leader['test'])})"
    line += f"; {', '.join(level)} cannot be told apart from it" if level else ""
    return line + (f"; {', '.join(behind)} {'is' if len(behind) == 1 else 'are'} behind it." if behind else ".")


def beats(a, b):
    """Is a's mean test accuracy above b's by more than their two standard deviations added?"""
    return a["test"]["mean"] - b["test"]["mean"] > a["test"]["std"] + b["test"]["std"]


def budget_caveat(steps, batch_size):
    """A line for a comparison run on another budget than the one its learning rates were chosen for, else None."""
    if (steps, batch_size) == (DEFAULT_STEPS, DEFAULT_BATCH_SIZE):
        return None
    return (
        f"Caveat: this comparison ran {steps} steps of {batch_size} examples; the learning rates were chosen for "
        f"{DEFAULT_STEPS} steps of {DEFAULT_BATCH_SIZE}. A method that learns slowly may not have reached its best "
        "here, so rank methods at the default budget, or look at each run's losses first."
    )


def to_csv(rows):
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(
        ["method", "rank", "trainable_parameters", "trainable_share", "adapter_bytes", "seeds", "zero_shot_test",
         "test_mean", "test_std", "validation_mean", "validation_std", "training_seconds", "validation_curve"]
    )  # fmt: skip
    for row in rows:
        writer.writerow(
            [row["method"], row["rank"] or "", row["trainable_parameters"], row["trainable_share"],
             row["adapter_bytes"] or "", len(row["seeds"]), row["zero_shot_test"], row["test"]["mean"],
             "" if row["test"]["std"] is None else row["test"]["std"], row["validation"]["mean"],
             "" if row["validation"]["std"] is None else row["validation"]["std"], row["training_seconds"],
             " ".join(f"{point['step']}:{point['validation']['mean']:.4f}" for point in row.get("curve", []))]
        )  # fmt: skip
    return text.getvalue()


def pyplot():
    """matplotlib's pyplot drawing to files (no window), or None when matplotlib is not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    return plt


def save(figure, path):
    plt = pyplot()
    figure.tight_layout()
    with atomic_write(path) as file:
        figure.savefig(file, format="png", dpi=120)
    plt.close(figure)
    return path


def method_style(method):
    """
    One colour and one marker per method, the same in every figure: its place in the registry picks them (a method
    the registry does not know, from older runs, its name).
    """
    if method in METHODS and METHODS[method].trains_base:  # full fine-tuning: one point, no rank
        return {"color": "black", "marker": "*"}
    index = list(METHODS).index(method) if method in METHODS else sum(map(ord, method))
    return {"color": f"C{index % 10}", "marker": "osD^vP<>"[index % 8]}


def plot(rows, path, title):
    """Test accuracy (mean ± std) against trainable parameters, log scale; None without matplotlib."""
    plt = pyplot()
    if plt is None:
        return None
    figure, axes = plt.subplots(figsize=(7, 4.5))
    lines = {}  # (method, settings) -> its rows with a rank, fewest parameters first: one line through its ranks
    for row in sorted(rows, key=lambda row: row["trainable_parameters"]):
        if row["rank"]:
            lines.setdefault((row["method"], row.get("settings", "")), []).append(row)
    # Methods with the same count (LoRA-XS, LoRA-SB and TinyLoRA with u = r² at one r) would hide one another: the
    # k lines at one count are drawn side by side, 7% apart on the log axis, the count itself in their middle.
    sharing = {}
    for line, points in lines.items():
        for row in points:
            sharing.setdefault(row["trainable_parameters"], []).append(line)

    def side_by_side(line, count):
        lines_here = sharing[count]
        return count * 1.07 ** (lines_here.index(line) - (len(lines_here) - 1) / 2)

    variants = {}  # a method's lines of other settings: same colour, another line style
    for (method, settings), points in lines.items():
        x = [side_by_side((method, settings), row["trainable_parameters"]) for row in points]
        y = [row["test"]["mean"] for row in points]
        error = [row["test"]["std"] or 0.0 for row in points]
        # More rank, more parameters: the ranks in the legend read left to right along the line. (Labels beside the
        # points would collide where the three lines cross, near 10^4 to 10^5 parameters.)
        ranks = ", ".join(str(row["rank"]) for row in points)
        others = variants.setdefault(method, [])
        style = ("-", "--", ":", "-.")[len(others) % 4]
        others.append(settings)
        name = f"{method} {settings}".strip()
        axes.errorbar(
            x, y, yerr=error, capsize=3, linestyle=style, label=f"{name}, r = {ranks}", **method_style(method)
        )
    for row in rows:
        name = METHODS[row["method"]].display_name if row["method"] in METHODS else row["label"]
        if row["rank"] is None and row["trainable_parameters"]:  # full fine-tuning: one point, no rank
            point, error = (row["trainable_parameters"], row["test"]["mean"]), row["test"]["std"] or 0.0
            axes.errorbar(*point, yerr=error, markersize=12, label=name, **method_style(row["method"]))
        if not row["trainable_parameters"]:  # zero-shot: a level to beat
            axes.axhline(row["test"]["mean"], color="gray", linestyle="--", label=name)
    axes.set_xscale("log")
    shared = any(len(lines_here) > 1 for lines_here in sharing.values())
    axes.set_xlabel("trainable parameters (log scale)" + ("; equal counts drawn side by side" if shared else ""))
    axes.set_ylabel("test accuracy (mean ± std over seeds)")
    axes.set_title(title, fontsize=10)
    axes.grid(True, alpha=0.3)
    axes.legend(loc="best", fontsize=8)
    return save(figure, path)


def trailing_mean(values, window):
    """Each value averaged with the window - 1 before it: a loss curve without the batch-to-batch jitter."""
    return [statistics.mean(values[max(0, i - window + 1) : i + 1]) for i in range(len(values))]


def plot_curves(rows, path, title):
    """
    How each configuration learned: training loss against step (smoothed, log scale) and validation accuracy
    against step; the mean over seeds, shaded from the lowest to the highest seed (loss) or ± one std (accuracy).
    None without matplotlib or without a trained row.
    """
    plt = pyplot()
    trained = [row for row in rows if row.get("losses", {}).get("mean")]
    if plt is None or not trained:
        return None
    figure, (loss_axes, accuracy_axes) = plt.subplots(1, 2, figsize=(12, 4.5))
    for row in trained:
        style, window = method_style(row["method"]), max(1, len(row["losses"]["mean"]) // 20)
        color = style["color"]  # the method's colour, as in the accuracy plot; its ranks by line style
        ranks = [other["rank"] for other in trained if other["method"] == row["method"]]
        line = ("-", "--", ":", "-.")[ranks.index(row["rank"]) % 4]
        mean, low, high = (trailing_mean(row["losses"][key], window) for key in ("mean", "low", "high"))
        steps = range(1, len(mean) + 1)
        loss_axes.plot(steps, mean, color=color, linestyle=line, label=row["label"])
        loss_axes.fill_between(steps, low, high, color=color, alpha=0.15)
        if row["curve"]:
            x = [point["step"] for point in row["curve"]]
            y = [point["validation"]["mean"] for point in row["curve"]]
            error = [point["validation"]["std"] or 0.0 for point in row["curve"]]
            accuracy_axes.plot(
                x, y, marker=style["marker"], markersize=3, color=color, linestyle=line, label=row["label"]
            )
            accuracy_axes.fill_between(x, [a - e for a, e in zip(y, error)], [a + e for a, e in zip(y, error)],
                                       color=color, alpha=0.15)  # fmt: skip
    loss_axes.set_yscale("log")
    loss_axes.set_xlabel("step")
    loss_axes.set_ylabel("training loss (log scale" + (f", mean of the last {window} steps)" if window > 1 else ")"))
    accuracy_axes.set_xlabel("step")
    accuracy_axes.set_ylabel("validation accuracy (mean ± std over seeds)")
    for axes in (loss_axes, accuracy_axes):
        axes.grid(True, alpha=0.3)
    accuracy_axes.legend(loc="best", fontsize=8)
    figure.suptitle(title, fontsize=10)
    return save(figure, path)


def report(results, out, steps, batch_size, seconds):
    """train.py's ending: write comparison-<task>.md, .json, .csv and .png into `out`, and print the table and words."""
    task, model = results[0]["task"], results[0]["base_model"]
    seeds = len({result["seed"] for result in results})
    title = f"{task} on {model}: {seeds} seed{'s' * (seeds > 1)}, {steps} steps of {batch_size} examples"
    facts = {"task": task, "base_model": model, "runs": len(results), "wall_seconds": seconds}
    caveat = budget_caveat(steps, batch_size)
    notes = [caveat] if caveat else []
    text, words, plot = write_comparison(
        results, out / f"comparison-{task}", title, facts, notes, out / f"curves-{task}.png"
    )
    print(f"\n{title}\n\n{text}\n" + "\n".join(words))
    plot_note = f" and .png, and {out}/curves-{task}.png" if plot else " (pip install matplotlib for the plots)"
    print(f"\n{len(results)} runs in {human_seconds(seconds)} ({human_seconds(seconds / len(results))} a run); "
          f"wrote {out}/comparison-{task}.md, .json, .csv{plot_note}")  # fmt: skip


def write_comparison(results, base, title, extra=None, notes=(), curves=None):
    """
    Write base.md, .json, .csv (and .png with matplotlib, and the learning curves at `curves` if given); return
    (table, summary lines, plot path or None). `results`: run records as train.py writes them, of one task.
    """
    rows = aggregate(results)
    shared = {row["settings"] for row in rows}
    title += f"; {shared.pop()}" if len(shared) == 1 and "" not in shared else ""  # a setting every row has
    text, words = table(rows), summary(rows) + list(notes)
    with atomic_write(base.with_suffix(".md"), "w") as file:
        file.write(f"{title}\n\n{text}\n" + "".join(f"- {line}\n" for line in words))
    with atomic_write(base.with_suffix(".json"), "w") as file:
        json.dump({"title": title, **(extra or {}), "rows": rows, "summary": words}, file, indent=2)
    with atomic_write(base.with_suffix(".csv"), "w") as file:
        file.write(to_csv(rows))
    if curves is not None:
        plot_curves(rows, curves, title)
    return text, words, plot(rows, base.with_suffix(".png"), title)
