"""Data loading, batching and scoring, against hand computations; the shipped data is what its generator makes."""

import json
import subprocess
import sys

import pytest
import torch

from conftest import ROOT, tiny_gpt
from loraxs_mini import LoraxsError
from loraxs_mini.data import Example, Task, check_fits, load_task, make_batch, read_jsonl, shipped_tasks, task_names
from loraxs_mini.evaluate import accuracy, greedy_answers, label_log_likelihoods
from loraxs_mini.model import IGNORE_INDEX
from loraxs_mini.tokenizer import END_OF_TEXT, decode, encode


def test_the_shipped_files_are_exactly_what_the_generator_makes():
    result = subprocess.run([sys.executable, "data/make_data.py", "--check"], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_shipped_tasks_hold_out_their_words_and_are_scored_as_documented():
    assert task_names(shipped_tasks()) == ["plural", "sentiment"]
    sentiment, plural = load_task("sentiment"), load_task("plural")
    assert sentiment.labels == [" negative", " positive"] and plural.labels is None
    assert {len(sentiment.splits[s]) for s in ("train", "validation", "test")} == {1200, 200, 400}
    nouns = {split: {e.prompt.split()[1] for e in plural.splits[split]} for split in plural.splits}
    assert not nouns["test"] & nouns["train"] and not nouns["validation"] & nouns["train"]

    sys.path.insert(0, str(ROOT / "data"))
    import make_data

    lexicon = set(make_data.POSITIVE) | set(make_data.NEGATIVE)
    used = {
        split: {word for e in sentiment.splits[split] for word in e.prompt.replace(".", " ").split()} & lexicon
        for split in sentiment.splits
    }
    assert not used["test"] & used["train"] and not used["validation"] & used["train"]
    assert not used["test"] & used["validation"] and len(used["test"]) == 16
    held_out_openings = [template.split("{")[0] for template in make_data.HELD_OUT_TEMPLATES]
    for split in ("validation", "test"):
        for example in sentiment.splits[split]:
            review = example.prompt.removeprefix("Review: ")
            assert any(review.startswith(opening) for opening in held_out_openings)
    assert not any(e.prompt.removeprefix("Review: ").startswith(("Honestly", "My friends", "In short", "I would"))
                   for e in sentiment.splits["train"])  # fmt: skip


def test_a_batch_grades_only_the_completion_and_its_end():
    examples = [Example("", "", [5, 6, 7], [8, 9]), Example("", "", [1], [2])]
    inputs, targets = make_batch(examples)
    assert inputs.tolist() == [[5, 6, 7, 8, 9], [1, 2, END_OF_TEXT, END_OF_TEXT, END_OF_TEXT]]
    assert targets.tolist() == [
        [IGNORE_INDEX, IGNORE_INDEX, 8, 9, END_OF_TEXT],
        [2, END_OF_TEXT, IGNORE_INDEX, IGNORE_INDEX, IGNORE_INDEX],
    ]


@pytest.mark.parametrize("batch_size", [1, 3])
@pytest.mark.parametrize(
    "labels", [[" positive", " not bad at all"], [" positive", " negative", " fine"]], ids=["mixed", "single-token"]
)  # a multi-token label takes the plain path; single-token labels all take the aside (one pass for every label)
def test_label_likelihoods_match_a_hand_computation(labels, batch_size):
    model = tiny_gpt().eval()
    prompts = [encode("Review: it was fine.\nSentiment:"), [11, 12], [7, 8, 9, 10]]  # padding within a batch
    examples = [Example("", "", prompt, []) for prompt in prompts]
    scores = label_log_likelihoods(model, examples, labels, batch_size=batch_size)
    for i, example in enumerate(examples):
        for k, label in enumerate(labels):
            tokens = encode(label)
            with torch.no_grad():
                log_probs = torch.log_softmax(model(torch.tensor([example.prompt_tokens + tokens]))[0][0], dim=-1)
            expected = sum(log_probs[len(example.prompt_tokens) - 1 + j, t] for j, t in enumerate(tokens))
            assert scores[i, k].item() == pytest.approx(expected.item(), abs=1e-4)


def test_greedy_answers_stop_at_the_end_token_and_match_generate():
    model = tiny_gpt().eval()
    examples = [Example("", "", [3, 4, 5], []), Example("", "", [9, 10], []), Example("", "", [7, 8, 6], [])]
    answers = greedy_answers(model, examples, max_new_tokens=4, batch_size=2)
    for example, answer in zip(examples, answers):
        tokens = model.generate(torch.tensor([example.prompt_tokens]), 4)[0, len(example.prompt_tokens) :].tolist()
        tokens = tokens[: tokens.index(END_OF_TEXT)] if END_OF_TEXT in tokens else tokens
        assert answer == decode(tokens)


def with_test_split(task, examples):
    return Task(task.name, {**task.splits, "test": examples}, task.labels)


def test_accuracy_uses_the_task_scoring_and_keeps_training_mode(tmp_path):
    task = load_task("sentiment")
    model = tiny_gpt().train()
    examples = task.splits["test"][:20]
    predicted = label_log_likelihoods(model, examples, task.labels).argmax(1)
    expected = sum(task.labels[k] == e.completion for k, e in zip(predicted.tolist(), examples))
    assert accuracy(model, with_test_split(task, examples), "test") == expected / 20 and model.training


@pytest.mark.parametrize("name", ["sentiment", "plural"])
def test_a_progress_bar_shows_while_scoring_and_changes_nothing(name, capsys):
    task = load_task(name)
    model = tiny_gpt().eval()
    examples = task.splits["validation"][:12]
    task = with_test_split(task, examples)
    quiet = accuracy(model, task, "test", batch_size=4)
    assert capsys.readouterr().err == ""
    assert accuracy(model, task, "test", batch_size=4, progress=True) == quiet
    label = "scoring" if task.labels else "generating"
    bar = capsys.readouterr().err
    assert f"{label}:   0%" in bar and "0/3" in bar  # 12 examples in batches of 4


def write(path, lines):
    path.write_text("".join(json.dumps(line) + "\n" if not isinstance(line, str) else line + "\n" for line in lines))
    return path


def test_own_data_from_one_file_is_split_80_10_10(tmp_path):
    lines = [{"prompt": f"Q{i}:", "completion": f" a{i}"} for i in range(50)]
    task = load_task(write(tmp_path / "mine.jsonl", lines))
    sizes = {split: len(examples) for split, examples in task.splits.items()}
    assert sizes == {"train": 40, "validation": 5, "test": 5} and task.labels is None and task.name == "mine"
    seen = [e.prompt for split in task.splits.values() for e in split]
    assert sorted(seen) == sorted(line["prompt"] for line in lines)  # nothing lost, nothing twice


def test_a_folder_without_validation_sets_a_tenth_of_train_aside(tmp_path):
    folder = tmp_path / "task"
    folder.mkdir()
    write(folder / "train.jsonl", [{"prompt": f"x{i}", "completion": " yes" if i % 2 else " no"} for i in range(30)])
    write(folder / "test.jsonl", [{"prompt": "y", "completion": " yes"}])
    task = load_task(folder)
    assert (len(task.splits["train"]), len(task.splits["validation"])) == (27, 3)
    assert task.labels == [" no", " yes"]


@pytest.mark.parametrize(
    "lines, message",
    [
        (['{"prompt": "a", "completion": " b"}', "not json"], "line 2: not valid JSON"),
        (['{"prompt": "a"}'], 'line 1: expected {"prompt": "...", "completion": "..."}'),
        (['{"prompt": "a", "completion": ""}'], "line 1: the completion is empty"),
        (["[1, 2]"], "line 1: expected"),
        ([], "holds no examples"),
    ],
)
def test_malformed_lines_name_the_file_and_line(tmp_path, lines, message):
    path = write(tmp_path / "bad.jsonl", lines)
    with pytest.raises(LoraxsError, match=message) as error:
        read_jsonl(path)
    assert str(path) in str(error.value)


def test_an_example_longer_than_the_context_names_its_line(tmp_path):
    lines = [{"prompt": "short", "completion": " x"}] * 3 + [{"prompt": "word " * 200, "completion": " x"}]
    folder = tmp_path / "long"
    folder.mkdir()
    write(folder / "train.jsonl", lines[:3])
    write(folder / "validation.jsonl", lines[:3])
    write(folder / "test.jsonl", lines)
    with pytest.raises(LoraxsError, match=r"test.jsonl, line 4: this example has 202 tokens, more than .* 128"):
        check_fits(load_task(folder), 128)


class NextTokenTable(torch.nn.Module):
    """A stand-in model that predicts, after each token, the one a table gives (log-probability ~0; others ~-20)."""

    def __init__(self, table):
        super().__init__()
        self.table = table
        self.anchor = torch.nn.Parameter(torch.zeros(1))  # scoring looks up the device of a parameter

    def hidden_states(self, idx):
        return idx.unsqueeze(-1).float()  # (b, T, 1): the token itself is all a position knows

    def lm_head(self, hidden):
        logits = torch.full((*hidden.shape[:-1], 50257), -20.0)
        for position, token in enumerate(hidden[..., 0].long().flatten().tolist()):
            logits.view(-1, 50257)[position, self.table.get(token, END_OF_TEXT)] = 20.0
        return logits


def test_a_label_that_begins_another_is_scored_with_its_end_so_the_longer_right_answer_can_win():
    four, four_and_a_half = encode(" 4"), encode(" 4.5")
    assert four_and_a_half[: len(four)] == four  # " 4.5" begins with " 4": the case in point
    prompt = encode("Rating:")
    # The model's greedy answer is " 4.5" and then the end: " 4" -> "." -> "5" -> <|endoftext|>.
    table = {prompt[-1]: four[0], four_and_a_half[0]: four_and_a_half[1], four_and_a_half[1]: four_and_a_half[2]}
    examples = [Example("Rating:", " 4.5", prompt, four_and_a_half)]
    scores = label_log_likelihoods(NextTokenTable(table), examples, [" 4", " 4.5", " 5"])
    assert scores.argmax(dim=1).tolist() == [1]  # " 4.5", as greedy decoding would answer
    assert scores[0, 1] > -1e-3  # the whole completion, end included, is what the model expects


def test_held_out_examples_that_are_also_training_examples_are_pointed_out(tmp_path):
    lines = [{"prompt": f"Is {i} even?", "completion": " yes" if i % 2 == 0 else " no"} for i in range(20)]
    folder = tmp_path / "task"
    folder.mkdir()
    for split, chosen in (("train", lines), ("test", lines[:3]), ("validation", lines[10:12])):
        (folder / f"{split}.jsonl").write_text("".join(json.dumps(line) + "\n" for line in chosen))
    with pytest.warns(UserWarning) as caught:
        load_task(folder)
    messages = [str(warning.message) for warning in caught]
    assert any(message.startswith("3 of the 3 test examples are also training examples") for message in messages)
    assert any(message.startswith("2 of the 2 validation examples") for message in messages)
