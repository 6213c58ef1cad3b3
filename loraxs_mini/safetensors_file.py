"""
A small reader and writer for the safetensors format.

What this file teaches
----------------------
A .safetensors file is three parts, nothing else:

    [ 8 bytes: N, little-endian unsigned ] [ N bytes: JSON header ] [ raw tensor bytes ]

The header maps each tensor name to {"dtype": "F32", "shape": [768, 2304],
"data_offsets": [begin, end]}, offsets counted from the start of the raw
bytes; an optional "__metadata__" entry holds string -> string pairs. Unlike a
pickled PyTorch checkpoint, loading runs no code: it only copies bytes.

Because the file says where everything is, a reader can check the header
against the file's size before touching any data: a truncated download or a
corrupt file is caught with a clear message instead of a crash or, worse, a
silently wrong tensor.

What counts as valid is what the official `safetensors` library accepts
(a test fuzzes both readers side by side): a JSON object; `__metadata__`
absent, null or an object of strings; every other entry with dtype, shape
and data_offsets (other fields are ignored); and the tensors' bytes laid end
to end from the first data byte to the last, with no gap, overlap or trailing
byte. Two differences, on purpose: a key written twice is refused (the
official reader lets the last one win in silence, so which tensor a file
means would depend on the reader), and so are the dtypes this reader does not
map to PyTorch (the float8 and unsigned 16/32/64-bit types).
"""

import json
import math
import os
import struct

import torch

from .errors import LoraxsError
from .files import atomic_write

DTYPES = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "I64": torch.int64,
    "I32": torch.int32,
    "I16": torch.int16,
    "I8": torch.int8,
    "U8": torch.uint8,
    "BOOL": torch.bool,
}
DTYPE_NAMES = {dtype: name for name, dtype in DTYPES.items()}
MAX_HEADER_BYTES = 100_000_000  # the format's own limit; a larger "header" means a corrupt file
MAX_ELEMENTS = 2**62  # a shape with more elements than this cannot be a tensor, even one with a zero dimension


def refuse_repeated_keys(pairs):
    """object_pairs_hook for json.loads: plain json lets the last of two equal keys win in silence."""
    keys = [key for key, _ in pairs]
    if len(set(keys)) != len(keys):
        repeated = next(key for key in keys if keys.count(key) > 1)
        raise ValueError(f"the key {repeated!r} appears twice")
    return dict(pairs)


def parse_json(text, what):
    """json.loads that refuses repeated keys and answers deep nesting or bad syntax with one LoraxsError."""
    try:
        return json.loads(text, object_pairs_hook=refuse_repeated_keys)
    except RecursionError:
        raise LoraxsError(f"{what} is nested too deeply to be read") from None
    except ValueError as error:  # JSONDecodeError and UnicodeDecodeError are both ValueErrors
        raise LoraxsError(f"{what} is not valid JSON ({error})") from None


def read_header(path):
    """
    Read and validate the header only. Returns (entries, metadata, data_start):
    entries maps name -> (dtype, shape, begin, end) with absolute byte offsets.
    """
    path = os.fspath(path)
    problem = f"{path} is not a valid safetensors file"
    try:
        file_size = os.path.getsize(path)
        with open(path, "rb") as file:
            prefix = file.read(8)
            if len(prefix) < 8:
                raise LoraxsError(f"{problem}: it is only {file_size} bytes long (truncated?)")
            (header_size,) = struct.unpack("<Q", prefix)
            if header_size > MAX_HEADER_BYTES:
                raise LoraxsError(f"{problem}: its header claims {header_size:,} bytes, over the 100 MB limit")
            if 8 + header_size > file_size:
                raise LoraxsError(
                    f"{problem}: its header length ({header_size:,} bytes) runs past the end of the "
                    f"file ({file_size:,} bytes); the file is truncated"
                )
            header_bytes = file.read(header_size)
    except OSError as error:
        raise LoraxsError(f"cannot read {path}: {error.strerror}") from None
    try:  # strict UTF-8, as the format says: json.loads alone would also take a byte-order mark, UTF-16 or surrogates
        header_text = header_bytes.decode("utf-8")
    except UnicodeDecodeError as error:
        raise LoraxsError(f"{problem}: its header is not valid UTF-8 ({error.reason} at byte {error.start})") from None
    header = parse_json(header_text, f"{problem}: its header")
    if not isinstance(header, dict):
        raise LoraxsError(f"{problem}: its header is not a JSON object")

    metadata = header.pop("__metadata__", None)
    metadata = {} if metadata is None else metadata
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise LoraxsError(f"{problem}: __metadata__ must map strings to strings")

    data_start = 8 + header_size
    data_size = file_size - data_start
    entries = {}
    for name, info in header.items():
        where = f"{problem}: tensor {name!r}"
        if not isinstance(info, dict) or not {"dtype", "shape", "data_offsets"} <= info.keys():
            raise LoraxsError(f"{where} needs the fields dtype, shape and data_offsets")  # others are ignored
        dtype, shape, offsets = info["dtype"], info["shape"], info["data_offsets"]
        if not isinstance(dtype, str) or dtype not in DTYPES:
            raise LoraxsError(f"{where} has unknown dtype {dtype!r}; this reader knows {', '.join(DTYPES)}")
        if not isinstance(shape, list) or not all(type(n) is int and n >= 0 for n in shape):
            raise LoraxsError(f"{where} has an invalid shape {shape!r}")
        if math.prod(max(n, 1) for n in shape) > MAX_ELEMENTS:
            raise LoraxsError(f"{where} has a shape too large for any tensor: {shape}")
        if (
            not isinstance(offsets, list)
            or len(offsets) != 2
            or not all(type(n) is int for n in offsets)
            or not 0 <= offsets[0] <= offsets[1]
        ):
            raise LoraxsError(f"{where} has invalid data_offsets {offsets!r}")
        begin, end = offsets
        if end > data_size:
            raise LoraxsError(
                f"{where} ends at byte {end:,} of the data, but the file holds only {data_size:,} "
                "bytes of data; the file is truncated or corrupt"
            )
        expected = math.prod(shape) * DTYPES[dtype].itemsize
        if end - begin != expected:
            raise LoraxsError(f"{where} has {end - begin:,} bytes, but shape {shape} of {dtype} needs {expected:,}")
        entries[name] = (DTYPES[dtype], tuple(shape), data_start + begin, data_start + end)

    # The tensors tile the data exactly: each begins where the one before it ends, and the last ends the file.
    # A gap or trailing bytes would be data no tensor owns, which the official reader refuses too.
    previous_end, previous_name = data_start, None
    for name, (_, _, begin, end) in sorted(entries.items(), key=lambda item: item[1][2:]):
        if begin < previous_end:
            raise LoraxsError(f"{problem}: tensors {previous_name!r} and {name!r} overlap")
        if begin > previous_end:
            raise LoraxsError(f"{problem}: the {begin - previous_end:,} bytes before {name!r} belong to no tensor")
        previous_end, previous_name = end, name
    if previous_end != file_size:
        raise LoraxsError(f"{problem}: the {file_size - previous_end:,} bytes at its end belong to no tensor")
    return entries, metadata, data_start


def load_file(path):
    """Returns (tensors, metadata): a dict name -> CPU tensor, and the string metadata."""
    entries, metadata, _ = read_header(path)
    tensors = {}
    with open(path, "rb") as file:
        for name, (dtype, shape, begin, end) in entries.items():
            buffer = bytearray(end - begin)
            file.seek(begin)
            if file.readinto(buffer) != len(buffer):
                raise LoraxsError(f"{path} ended while reading tensor {name!r}; the file is truncated")
            # Safetensors stores little-endian bytes, the byte order of every machine PyTorch runs on.
            tensor = torch.frombuffer(buffer, dtype=dtype) if buffer else torch.empty(0, dtype=dtype)
            tensors[name] = tensor.reshape(shape)
    return tensors, metadata


def save_file(tensors, path, metadata=None):
    """Write a dict name -> tensor (and optional string metadata) atomically."""
    header, offset, contiguous = {}, 0, {}
    for name, tensor in tensors.items():
        tensor = tensor.detach().cpu().contiguous()
        if tensor.dtype not in DTYPE_NAMES:
            raise LoraxsError(f"cannot save tensor {name!r}: safetensors has no dtype for {tensor.dtype}")
        nbytes = tensor.numel() * tensor.element_size()
        header[name] = {
            "dtype": DTYPE_NAMES[tensor.dtype],
            "shape": list(tensor.shape),
            "data_offsets": [offset, offset + nbytes],
        }
        contiguous[name] = tensor
        offset += nbytes
    if metadata:
        header["__metadata__"] = {str(key): str(value) for key, value in metadata.items()}
    header_bytes = json.dumps(header, separators=(",", ":")).encode("utf-8")
    header_bytes += b" " * (-len(header_bytes) % 8)  # pad with spaces so the data starts 8-byte aligned
    with atomic_write(path) as file:
        file.write(struct.pack("<Q", len(header_bytes)))
        file.write(header_bytes)
        for tensor in contiguous.values():
            # Reinterpret the tensor's memory as bytes: no conversion, no copy.
            file.write(tensor.reshape(-1).view(torch.uint8).numpy().data)
