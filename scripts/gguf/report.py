#!/usr/bin/env python3
"""Reads GGUF files with llama.cpp's own Python reader (the `gguf` package from PyPI) and
reports what it finds, for mlxtune's tests to check against.

For every file: all metadata (key -> value), every tensor (name, GGML type, row-major
shape), and each tensor dequantized by `gguf.quants` into OUT/<file name>.safetensors
(float32). With --reference F32.gguf, every tensor whose type `gguf.quants` can quantize
(Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, F16, BF16) is quantized again from the reference's float32
values and compared byte for byte with the file ("exact": true / false).

Prints one JSON object: {file name: {"metadata": {...}, "tensors": [...]}}.
"""
import argparse
import json
import os
import struct
import sys

import numpy as np
import gguf
from gguf import GGMLQuantizationType as T

REQUANTIZABLE = {T.Q8_0, T.Q4_0, T.Q4_1, T.Q5_0, T.Q5_1, T.F16, T.BF16}


def jsonable(v):
    if isinstance(v, (list, tuple)):
        return [jsonable(x) for x in v]
    if isinstance(v, (np.integer,)):
        return int(v)
    if isinstance(v, (np.floating,)):
        return float(v)
    if isinstance(v, bytes):
        return v.decode("utf-8", "replace")
    return v


def metadata(reader):
    out = {}
    for name, field in reader.fields.items():
        out[name] = jsonable(field.contents())
    return out


def write_safetensors(path, arrays):
    header, blobs, offset = {}, [], 0
    for name, a in arrays.items():
        data = np.ascontiguousarray(a, dtype=np.float32).tobytes()
        header[name] = {"dtype": "F32", "shape": list(a.shape), "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    text = json.dumps(header).encode()
    text += b" " * ((8 - len(text) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for b in blobs:
            f.write(b)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--reference")
    p.add_argument("--out", required=True)
    p.add_argument("files", nargs="+")
    a = p.parse_args()
    ref = {}
    if a.reference:
        for t in gguf.GGUFReader(a.reference).tensors:
            ref[t.name] = gguf.quants.dequantize(t.data, t.tensor_type)
    report = {}
    for path in a.files:
        reader = gguf.GGUFReader(path)
        tensors, values = [], {}
        for t in reader.tensors:
            deq = gguf.quants.dequantize(t.data, t.tensor_type).astype(np.float32)
            values[t.name] = deq
            entry = {
                "name": t.name,
                "type": t.tensor_type.name,
                "shape": [int(d) for d in reversed(t.shape.tolist())],
                "bytes": int(t.n_bytes),
            }
            if t.name in ref and t.tensor_type in REQUANTIZABLE:
                again = gguf.quants.quantize(ref[t.name].astype(np.float32), t.tensor_type)
                entry["exact"] = bool(np.array_equal(again.view(np.uint8).ravel(), t.data.view(np.uint8).ravel()))
            tensors.append(entry)
        name = os.path.basename(path)
        write_safetensors(os.path.join(a.out, name + ".safetensors"), values)
        report[name] = {"metadata": metadata(reader), "tensors": tensors}
    json.dump(report, sys.stdout)


if __name__ == "__main__":
    main()
