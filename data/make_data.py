"""
Rebuild the toy tasks in data/, byte for byte: python data/make_data.py

Every task is written as train / validation / test JSON Lines files of
{"prompt": ..., "completion": ...}. The generator is deterministic (a fixed
seed, sorted word lists, stable JSON), so running it again reproduces the
committed files exactly; `python data/make_data.py --check` verifies that.

The held-out splits use words (and, for sentiment, sentence templates) that
never appear in training: a model can only score there with what it already
knew before fine-tuning. data/README.md is the data card.
"""

import argparse
import json
import random
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent

# ------------------------------------------------------------------ sentiment

POSITIVE = """
admirable amazing beautiful brilliant charming cheerful comfortable delightful elegant enjoyable excellent
exceptional exquisite fabulous fantastic flawless friendly generous glorious good gorgeous graceful great
happy heavenly impressive inspiring joyful lovely magnificent marvelous nice outstanding perfect pleasant
pleasing refreshing remarkable satisfying splendid stellar sublime superb tasty terrific wholesome wonderful
""".split()
NEGATIVE = """
annoying appalling atrocious awful bad bland boring clumsy cruel depressing disappointing disgusting dismal
dreadful dull filthy foul gloomy grim hideous horrible inferior lousy mediocre messy miserable nasty noisy
offensive painful pathetic poor rude sad shabby sloppy stale tedious terrible tiresome ugly unbearable
unpleasant useless wasteful weak worthless wretched
""".split()
NOUNS = """
album book breakfast cafe class coffee concert course dinner film game garden hotel lecture meal movie
museum music novel party play restaurant room service show soup speech story team trip
""".split()
TRAIN_TEMPLATES = [
    "The {noun} was {adjective}.",
    "I thought the {noun} was {adjective}.",
    "What a {adjective} {noun}.",
    "Our {noun} turned out {adjective}.",
    "The {noun} seemed {adjective} to me.",
    "Everyone agreed the {noun} was {adjective}.",
    "The {noun} was {adjective} and {second}.",
]
HELD_OUT_TEMPLATES = [
    "Honestly, the {noun} felt {adjective}.",
    "My friends called the {noun} {adjective}.",
    "In short: a {adjective} {noun}.",
    "I would describe the {noun} as {adjective} and {second}.",
]


def split_words(words, rng, held_out):
    """(train words, validation words, test words): `held_out` each for validation and test."""
    words = sorted(words)
    rng.shuffle(words)
    return words[2 * held_out :], words[:held_out], words[held_out : 2 * held_out]


def sentiment(rng):
    positive = split_words(POSITIVE, rng, held_out=8)
    negative = split_words(NEGATIVE, rng, held_out=8)
    sizes = {"train": 1200, "validation": 200, "test": 400}
    splits = {}
    for index, split in enumerate(("train", "validation", "test")):
        templates = TRAIN_TEMPLATES if split == "train" else HELD_OUT_TEMPLATES
        examples = []
        for number in range(sizes[split]):
            label, words = (" positive", positive[index]) if number % 2 == 0 else (" negative", negative[index])
            adjective, second = rng.sample(words, 2)
            review = rng.choice(templates).format(noun=rng.choice(NOUNS), adjective=adjective, second=second)
            examples.append({"prompt": f"Review: {review}\nSentiment:", "completion": label})
        rng.shuffle(examples)
        splits[split] = examples
    return splits


# ------------------------------------------------------------------ plural

# Common nouns with regular plurals (no -f/-fe or -o words, whose plurals vary).
PLURAL_NOUNS = """
actor address animal apple army arrow artist baby bag ball band bank basket battery beach bean bear bed bell belt
berry bike bird blanket boat body bone book boot bottle box boy brain branch brick bridge brush bucket bug bus
bush button cabin cake camera candle canyon car card carpet castle cat chain chair cherry child_ church circle
city class clock cloud coat coin college color computer cookie corner country cow crab crown cup dancer daisy
desk diary dinner dish doctor dog doll dollar door dragon dream dress driver duck eagle egg engine eye face
factory farm farmer fence field finger fish_ flag flower fly forest fox friend frog fruit game garden gate ghost
gift girl glass glove goat guitar hammer hand hat hill horse hospital house insect island jacket jar jewel judge
key kid king kitchen kite ladder lady lake lamp lawyer leg lemon letter library lily lion lizard lunch machine
map market match monkey month monster mountain mouse_ movie nail name needle nest night nose ocean office onion
orange owl page painter pan parent party path pen pencil penny pepper piano picture pig pillow pilot planet
plant plate player pocket pond pony prince puppy puzzle queen question rabbit radio rat ring river road robot
rock room rose ruler sailor sandwich school scientist seed shirt shoe shop singer sister skirt snake song spider
spoon star story street student sun_ table tail teacher tent ticket tiger toe tool tower town toy train tree
truck turtle valley village violin wall watch window wing witch wolf_ worker writer
""".split()
PLURAL_NOUNS = [noun for noun in PLURAL_NOUNS if not noun.endswith("_")]  # _ marks irregular plurals: left out


def plural_of(noun):
    """English's regular rules: box -> boxes, city -> cities (but day -> days), cat -> cats."""
    if noun.endswith(("s", "x", "z", "ch", "sh")):
        return noun + "es"
    if noun.endswith("y") and noun[-2] not in "aeiou":
        return noun[:-1] + "ies"
    return noun + "s"


def plurals(rng):
    nouns = sorted(PLURAL_NOUNS)
    rng.shuffle(nouns)
    held_out = len(nouns) // 5
    words = {"validation": nouns[:held_out], "test": nouns[held_out : 2 * held_out], "train": nouns[2 * held_out :]}
    splits = {}
    for split in ("train", "validation", "test"):
        examples = [{"prompt": f"Word: {noun}\nPlural:", "completion": f" {plural_of(noun)}"} for noun in words[split]]
        rng.shuffle(examples)
        splits[split] = examples
    return splits


TASKS = {"sentiment": sentiment, "plural": plurals}


def render(examples):
    return "".join(json.dumps(example, ensure_ascii=False, sort_keys=True) + "\n" for example in examples)


def main():
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("--check", action="store_true", help="verify the files on disk instead of writing them")
    args = parser.parse_args()
    stale = []
    for name, build in TASKS.items():
        splits = build(random.Random(f"loraxs-mini/{name}"))
        for split, examples in splits.items():
            path = HERE / name / f"{split}.jsonl"
            text = render(examples)
            if args.check:
                if not path.is_file() or path.read_text(encoding="utf-8") != text:
                    stale.append(str(path))
            else:
                path.parent.mkdir(exist_ok=True)
                path.write_text(text, encoding="utf-8")
                print(f"wrote {path.relative_to(HERE.parent)}: {len(examples)} examples")
    if stale:
        sys.exit("out of date (run python data/make_data.py): " + ", ".join(stale))


if __name__ == "__main__":
    main()
