"""
Seeded-mutation fuzzing of the safetensors reader against the official library.

Start from valid files, break them in the ways real files break (flipped bytes,
truncation, trailing bytes, a wrong header length) and in the ways a hand-edited
or hostile header does (wrong types, huge or negative sizes, repeated keys, deep
nesting, gaps between tensors, odd __metadata__). For every case:

    ours raises anything but LoraxsError          -> a bug (a traceback for a student)
    ours accepts, the official reader refuses     -> a bug (we accepted a bad file)
    ours accepts, the tensors differ from theirs  -> a bug (wrong bytes, the worst kind)
    ours refuses, the official reader accepts     -> allowed only where we are stricter on purpose: a key
                                                     written twice, a dtype we do not map
"""

import json
import random
import struct

import pytest
import torch

from loraxs_mini.errors import LoraxsError
from loraxs_mini.safetensors_file import DTYPES, load_file, save_file

safetensors_torch = pytest.importorskip("safetensors.torch")

CASES = 3000


def valid_files(tmp_path):
    """A few valid files as bytes: several dtypes, an empty tensor, a scalar, with and without metadata."""
    generator = torch.Generator().manual_seed(0)
    sets = [
        ({"w": torch.randn(3, 4, generator=generator), "b": torch.randn(4, generator=generator)}, {"k": "v"}),
        (
            {
                "h": torch.randn(2, 2, generator=generator).half(),
                "i": torch.arange(5),
                "m": torch.tensor([True, False]),
            },
            None,
        ),  # fmt: skip
        ({"empty": torch.zeros(0, 3), "scalar": torch.tensor(2.5), "u": torch.arange(6, dtype=torch.uint8)}, {}),
    ]
    files = []
    for number, (tensors, metadata) in enumerate(sets):
        path = tmp_path / f"valid{number}.safetensors"
        save_file(tensors, path, metadata)
        files.append(path.read_bytes())
    return files


def split(data):
    (size,) = struct.unpack("<Q", data[:8])
    return json.loads(data[8 : 8 + size]), data[8 + size :]


def join(header, body, text=None):
    header_bytes = (text if text is not None else json.dumps(header)).encode("utf-8", "surrogatepass")
    return struct.pack("<Q", len(header_bytes)) + header_bytes + body


ODD_VALUES = [None, True, 0, -1, 1.5, 2**63, 2**64 + 1, "", "F32", "F8_E4M3", "U32", [], [1], [[1]], {}, {"a": 1}]


def mutate(data, rng):
    """One broken variant of a valid file."""
    header, body = split(data)
    names = [name for name in header if name != "__metadata__"]
    kind = rng.randrange(14)
    if kind == 0:  # flip a few bytes anywhere
        data = bytearray(data)
        for _ in range(rng.randint(1, 4)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        return bytes(data)
    if kind == 1:  # truncate
        return data[: rng.randrange(len(data))]
    if kind == 2:  # trailing bytes
        return data + bytes(rng.randrange(1, 9))
    if kind == 3:  # a wrong header length
        return struct.pack("<Q", rng.choice([0, 1, len(data), 2**63, split_size(data) + rng.randint(-3, 3)])) + data[8:]
    name = rng.choice(names)
    info = header[name]
    if kind == 4:  # a field of odd type
        info[rng.choice(["dtype", "shape", "data_offsets"])] = rng.choice(ODD_VALUES)
    elif kind == 5:  # a shape with a huge, negative or zero dimension
        info["shape"] = [rng.choice([0, 1, -1, 2**31, 2**62, 2**63, 2**64]) for _ in range(rng.randint(1, 3))]
    elif kind == 6:  # moved offsets: gaps, overlaps, past the end
        begin, end = info["data_offsets"]
        shift = rng.choice([-8, -1, 1, 4, 8, 1000])
        info["data_offsets"] = rng.choice([[begin + shift, end + shift], [begin, end + shift], [begin + shift, end]])
    elif kind == 7:  # another dtype of any width
        info["dtype"] = rng.choice(list(DTYPES) + ["F8_E5M2", "U16", "U64", "f32", "F128"])
    elif kind == 8:  # a missing or an extra field
        if rng.random() < 0.5:
            del info[rng.choice(list(info))]
        else:
            info[rng.choice(["extra", "offsets", "Dtype"])] = 1
    elif kind == 9:  # __metadata__ of any shape
        header["__metadata__"] = rng.choice(ODD_VALUES + [{"a": "b"}, {"a": ["b"]}, {"a": {"b": "c"}}])
    elif kind == 10:  # a key written twice (json.dumps cannot, so splice the text)
        text = json.dumps(header)
        repeat = rng.choice([json.dumps(name), '"__metadata__"'])
        return join(None, body, text[:-1] + f", {repeat}: " + json.dumps(rng.choice([info, {}, {"x": "y"}])) + "}")
    elif kind == 11:  # deeply nested JSON, where a value should be flat
        depth = rng.choice([50, 5000, 100_000])
        return join(None, body, json.dumps(header)[:-1] + ', "deep": ' + "[" * depth + "]" * depth + "}")
    elif kind == 12:  # a header that is not an object
        return join(None, body, rng.choice(["[]", "null", "1", '"text"', "{", "{}"]))
    else:  # a name that is empty, odd or very long
        header[rng.choice(["", "\x00", "a" * 10_000, "é"])] = header.pop(name)
    return join(header, body)


def split_size(data):
    return struct.unpack("<Q", data[:8])[0]


def official(data):
    try:
        return safetensors_torch.load(data)
    except Exception:  # noqa: BLE001 -- any refusal of theirs is a refusal
        return None


def test_the_reader_refuses_what_the_official_one_refuses_and_never_returns_wrong_bytes(tmp_path):
    rng = random.Random(0)
    valid = valid_files(tmp_path)
    path = tmp_path / "case.safetensors"
    counts = {"accepted": 0, "refused": 0}
    for case in range(CASES):
        data = mutate(rng.choice(valid), rng)
        path.write_bytes(data)
        theirs = official(data)
        try:
            ours, _ = load_file(path)
        except LoraxsError as error:
            counts["refused"] += 1
            if theirs is not None:  # stricter than safetensors only where safetensors_file.py says why
                on_purpose = "unknown dtype" in str(error) or "appears twice" in str(error)
                assert on_purpose, f"case {case}: we refused what safetensors reads: {error}"
            continue
        counts["accepted"] += 1
        assert theirs is not None, f"case {case}: we accepted a file that safetensors refuses"
        assert ours.keys() == theirs.keys(), f"case {case}"
        for name in ours:
            assert ours[name].dtype == theirs[name].dtype and ours[name].shape == theirs[name].shape, f"case {case}"
            assert torch.equal(ours[name].view(-1).view(torch.uint8), theirs[name].view(-1).view(torch.uint8))
    assert counts["accepted"] > 50 and counts["refused"] > 1000  # the mutations reach both sides
    print(f"{CASES} mutated files: {counts['accepted']} read, {counts['refused']} refused, all as safetensors does")
