"""Our safetensors reader and writer: round trips, agreement with the reference library, bad files."""

import json
import struct

import pytest
import torch

from loraxs_mini import LoraxsError
from loraxs_mini.safetensors_file import load_file, read_header, save_file


def sample_tensors():
    generator = torch.Generator().manual_seed(0)
    return {
        "f32": torch.randn(3, 5, generator=generator),
        "f16": torch.randn(4, generator=generator).half(),
        "bf16": torch.randn(2, 3, generator=generator).bfloat16(),
        "i64": torch.arange(6).reshape(2, 3),
        "flag": torch.tensor([True, False, True]),
        "scalar": torch.tensor(2.5),
        "empty": torch.zeros(0, 4),
    }


def test_round_trip_keeps_every_dtype_shape_and_value(tmp_path):
    tensors = sample_tensors()
    save_file(tensors, tmp_path / "t.safetensors", metadata={"method": "loraxs", "rank": 8})
    loaded, metadata = load_file(tmp_path / "t.safetensors")
    assert metadata == {"method": "loraxs", "rank": "8"}
    assert loaded.keys() == tensors.keys()
    for name, tensor in tensors.items():
        assert loaded[name].dtype == tensor.dtype and torch.equal(loaded[name], tensor), name


def test_agrees_with_the_reference_library_both_ways(tmp_path):
    reference = pytest.importorskip("safetensors.torch")
    tensors = {k: v for k, v in sample_tensors().items()}
    save_file(tensors, tmp_path / "ours.safetensors", metadata={"format": "pt"})
    theirs = reference.load_file(tmp_path / "ours.safetensors")
    for name, tensor in tensors.items():
        assert torch.equal(theirs[name], tensor), name

    reference.save_file(tensors, tmp_path / "theirs.safetensors", metadata={"k": "v"})
    ours, metadata = load_file(tmp_path / "theirs.safetensors")
    assert metadata == {"k": "v"}
    for name, tensor in tensors.items():
        assert torch.equal(ours[name], tensor), name


def test_data_starts_eight_byte_aligned(tmp_path):
    save_file({"x": torch.ones(3)}, tmp_path / "t.safetensors")
    _, _, data_start = read_header(tmp_path / "t.safetensors")
    assert data_start % 8 == 0


def write_raw(path, header, data=b"", header_size=None):
    header_bytes = header if isinstance(header, bytes) else json.dumps(header).encode()
    size = len(header_bytes) if header_size is None else header_size
    path.write_bytes(struct.pack("<Q", size) + header_bytes + data)
    return path


GOOD_ENTRY = {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 16]}


def test_a_well_formed_hand_written_file_reads(tmp_path):
    path = write_raw(tmp_path / "ok.safetensors", {"w": GOOD_ENTRY}, struct.pack("<4f", 1, 2, 3, 4))
    tensors, _ = load_file(path)
    assert tensors["w"].tolist() == [[1.0, 2.0], [3.0, 4.0]]


@pytest.mark.parametrize(
    "case, message",
    [
        ("shorter_than_8_bytes", "only 3 bytes long"),
        ("truncated_data", "truncated"),
        ("header_length_past_end", "runs past the end of the file"),
        ("huge_header_length", "over the 100 MB limit"),
        ("offsets_out_of_range", "ends at byte 64"),
        ("wrong_byte_length", r"has 12 bytes, but shape \[2, 2\] of F32 needs 16"),
        ("unknown_dtype", "unknown dtype 'F8_E9'"),
        ("not_json", "not valid JSON"),
        ("not_an_object", "not a JSON object"),
        ("overlapping", "overlap"),
        ("negative_shape", "invalid shape"),
        ("reversed_offsets", "invalid data_offsets"),
        ("missing_field", "needs the fields dtype, shape and data_offsets"),
        ("dtype_is_a_list", r"unknown dtype \['F32'\]"),
        ("deeply_nested", "nested too deeply"),
        ("empty_tensor_with_a_huge_dimension", "too large for any tensor"),
        ("repeated_key", "the key 'w' appears twice"),
        ("metadata_is_a_list", "__metadata__ must map strings to strings"),
        ("repeated_metadata", "the key '__metadata__' appears twice"),
        ("gap_between_tensors", "the 4 bytes before 'b' belong to no tensor"),
        ("trailing_bytes", "the 4 bytes at its end belong to no tensor"),
        ("byte_order_mark", "not valid JSON"),
        ("not_utf8", "its header is not valid UTF-8"),
    ],
)
def test_malformed_files_give_a_clear_error(tmp_path, case, message):
    path = tmp_path / f"{case}.safetensors"
    data = bytes(16)
    if case == "shorter_than_8_bytes":
        path.write_bytes(b"abc")
    elif case == "truncated_data":
        write_raw(path, {"w": GOOD_ENTRY}, data[:10])
    elif case == "header_length_past_end":
        write_raw(path, {"w": GOOD_ENTRY}, data, header_size=10_000)
    elif case == "huge_header_length":
        write_raw(path, b"{}", header_size=2**40)
    elif case == "offsets_out_of_range":
        write_raw(path, {"w": {"dtype": "F32", "shape": [2, 2], "data_offsets": [48, 64]}}, data)
    elif case == "wrong_byte_length":
        write_raw(path, {"w": {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 12]}}, data)
    elif case == "unknown_dtype":
        write_raw(path, {"w": {**GOOD_ENTRY, "dtype": "F8_E9"}}, data)
    elif case == "not_json":
        write_raw(path, b"{this is not json}", data)
    elif case == "not_an_object":
        write_raw(path, b"[1, 2, 3]", data)
    elif case == "overlapping":
        entries = {"a": GOOD_ENTRY, "b": {"dtype": "F32", "shape": [2], "data_offsets": [8, 16]}}
        write_raw(path, entries, data)
    elif case == "negative_shape":
        write_raw(path, {"w": {**GOOD_ENTRY, "shape": [-2, -2]}}, data)
    elif case == "reversed_offsets":
        write_raw(path, {"w": {**GOOD_ENTRY, "data_offsets": [16, 0]}}, data)
    elif case == "missing_field":
        write_raw(path, {"w": {"dtype": "F32", "shape": [4]}}, data)
    elif case == "dtype_is_a_list":
        write_raw(path, {"w": {**GOOD_ENTRY, "dtype": ["F32"]}}, data)
    elif case == "deeply_nested":
        write_raw(path, b'{"w": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", data)
    elif case == "empty_tensor_with_a_huge_dimension":
        write_raw(path, {"w": {"dtype": "F32", "shape": [0, 2**63], "data_offsets": [0, 0]}}, b"")
    elif case == "repeated_key":
        write_raw(path, ('{"w": %s, "w": %s}' % (json.dumps(GOOD_ENTRY), json.dumps(GOOD_ENTRY))).encode(), data)
    elif case == "metadata_is_a_list":
        write_raw(path, {"__metadata__": [], "w": GOOD_ENTRY}, data)
    elif case == "repeated_metadata":
        write_raw(path, ('{"__metadata__": {}, "__metadata__": {}, "w": %s}' % json.dumps(GOOD_ENTRY)).encode(), data)
    elif case == "gap_between_tensors":
        entries = {"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]},
                   "b": {"dtype": "F32", "shape": [2], "data_offsets": [8, 16]}}  # fmt: skip
        write_raw(path, entries, data)
    elif case == "byte_order_mark":  # the official reader refuses it too: the header is JSON in UTF-8, nothing before
        write_raw(path, b"\xef\xbb\xbf" + json.dumps({"w": GOOD_ENTRY}).encode(), data)
    elif case == "not_utf8":  # a lone continuation byte inside a key
        write_raw(path, b'{"w\x80": ' + json.dumps(GOOD_ENTRY).encode() + b"}", data)
    elif case == "trailing_bytes":
        write_raw(path, {"w": {"dtype": "F32", "shape": [3], "data_offsets": [0, 12]}}, data)
    with pytest.raises(LoraxsError, match=message) as error:
        load_file(path)
    assert str(path) in str(error.value)


def test_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(LoraxsError, match="cannot read"):
        load_file(tmp_path / "nowhere.safetensors")


def test_a_failed_write_leaves_no_file(tmp_path):
    class NotATensor:
        def detach(self):
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        save_file({"ok": torch.ones(2), "bad": NotATensor()}, tmp_path / "t.safetensors")
    assert list(tmp_path.iterdir()) == []
