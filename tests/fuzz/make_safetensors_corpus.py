#!/usr/bin/env python3
"""Writes the seed corpus of fuzz_safetensors (tests/fuzz/corpus/safetensors): a few tiny valid files
in the reference library's layout and one invalid file per family of header errors.

usage: make_safetensors_corpus.py [OUTPUT_DIR]
"""
import json
import os
import struct
import sys

SIZES = {"BOOL": 1, "U8": 1, "I8": 1, "I16": 2, "F16": 2, "BF16": 2, "I32": 4, "F32": 4, "F64": 8, "I64": 8}
ORDER = ["BOOL", "U8", "I8", "I16", "F16", "BF16", "I32", "F32", "F64", "I64"]


def image(header_text, data=b"", length=None):
    header = header_text.encode("utf-8") if isinstance(header_text, str) else header_text
    return struct.pack("<Q", len(header) if length is None else length) + header + data


def reference(tensors, metadata=None):
    """tensors: {name: (dtype, shape)}, laid out as the reference writer does (dtype descending, name)."""
    header, data, offset = {}, b"", 0
    if metadata:
        header["__metadata__"] = dict(sorted(metadata.items()))
    for name, (dtype, shape) in sorted(tensors.items(), key=lambda kv: (-ORDER.index(kv[1][0]), kv[0])):
        count = 1
        for d in shape:
            count *= d
        size = count * SIZES[dtype]
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + size]}
        data += bytes((offset + i) % 251 for i in range(size))
        offset += size
    text = json.dumps(header, separators=(",", ":"))
    text += " " * ((8 - len(text) % 8) % 8)
    return image(text, data)


def entry(dtype, shape, begin, end):
    return {"dtype": dtype, "shape": shape, "data_offsets": [begin, end]}


def files():
    every_dtype = {dtype.lower(): (dtype, [2]) for dtype in ORDER}
    valid = reference({"a": ("F32", [2, 3]), "b": ("I64", [2])}, {"format": "pt"})
    yield "valid_every_dtype", reference(every_dtype, {"format": "pt"})
    yield "valid_scalar_and_empty", reference({"s": ("F64", []), "e": ("F32", [0, 3]), "u": ("U8", [3])})
    yield "valid_no_tensors", reference({})
    yield "valid_golden_like", valid
    # Not the reference layout, still valid: a misaligned F32 after one byte.
    yield "valid_misaligned", image(json.dumps({"u": entry("U8", [1], 0, 1), "f": entry("F32", [1], 1, 5)}),
                                    b"\x01\x00\x00\x80\x3f")
    yield "bad_truncated", valid[: len(valid) - 5]
    yield "bad_header_length", image("{}", length=1 << 40)
    yield "bad_json", image('{"a":{"dtype":"F32","shape":[1],')
    yield "bad_overlap", image(json.dumps({"a": entry("F32", [2], 0, 8), "b": entry("F32", [2], 4, 12)}), bytes(12))
    yield "bad_gap", image(json.dumps({"a": entry("F32", [1], 0, 4), "b": entry("F32", [1], 8, 12)}), bytes(12))
    yield "bad_shape_overflow", image(json.dumps({"a": entry("F32", [1 << 32, 1 << 32, 1 << 32], 0, 4)}), bytes(4))
    yield "bad_shape_float", image(json.dumps({"a": entry("F32", [1.5], 0, 4)}), bytes(4))
    yield "bad_metadata", image(json.dumps({"__metadata__": {"format": 1}}))
    yield "bad_dtype", image(json.dumps({"a": entry("C64", [1], 0, 8)}), bytes(8))


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "corpus", "safetensors")
    os.makedirs(out, exist_ok=True)
    for name, data in files():
        assert len(data) < 4096, name
        with open(os.path.join(out, name + ".safetensors"), "wb") as f:
            f.write(data)


if __name__ == "__main__":
    main()
