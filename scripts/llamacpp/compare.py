#!/usr/bin/env python3
"""Loads the GGUF files scripts/llamacpp/compare.sh wrote into llama.cpp (llama-cpp-python)
and compares with transformers' reference outputs of each fixture (which mlxtune matches to
1e-4, crates/mlxtune-engine/tests/fidelity.rs) and with `mlxtune eval` of the same file:
tokenization, logits of the reference inputs (F32, F16), greedy tokens, eval loss per type.
"""
import json
import math
import os
import struct
import sys

import numpy as np
from llama_cpp import Llama

ARCHS = ["lfm2", "llama", "qwen2", "qwen3"]
QUANTS = ["F32", "F16", "Q8_0", "Q4_0", "Q4_1", "Q4_K_M"]


def read_safetensors(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        data = f.read()
    out = {}
    for k, v in header.items():
        if k == "__metadata__":
            continue
        dt = {"F32": np.float32, "I32": np.int32, "I64": np.int64}[v["dtype"]]
        s, e = v["data_offsets"]
        out[k] = np.frombuffer(data[s:e], dtype=dt).reshape(v["shape"])
    return out


def logits_of(llm, ids):
    llm.reset()
    llm.eval(list(map(int, ids)))
    return np.array(llm.scores[: len(ids)], dtype=np.float64)


def greedy(llm, prompt, n):
    ids = list(map(int, prompt))
    for _ in range(n):
        ids.append(int(np.argmax(logits_of(llm, ids)[-1])))
    return ids[len(prompt):]


def loss(llm, texts, eos):
    total, count = 0.0, 0
    for t in texts:
        ids = llm.tokenize(t.encode(), add_bos=True, special=True)
        if ids[-1] != eos:
            ids.append(eos)
        lg = logits_of(llm, ids)[:-1]
        lg = lg - lg.max(axis=1, keepdims=True)
        lp = lg - np.log(np.exp(lg).sum(axis=1, keepdims=True))
        total -= sum(lp[i, ids[i + 1]] for i in range(len(ids) - 1))
        count += len(ids) - 1
    return total / count


def main():
    out = sys.argv[1]
    ours = json.load(open(os.path.join(out, "ours.json")))
    rows = []
    for arch in ARCHS:
        fixture = os.path.join("tests/fixtures/models", arch)
        ref = json.load(open(os.path.join(fixture, "reference.json")))
        tensors = read_safetensors(os.path.join(fixture, "reference.safetensors"))
        texts = ref["eval_records"]
        for quant in QUANTS:
            path = os.path.join(out, f"{arch}-{quant}.gguf")
            llm = Llama(model_path=path, n_ctx=256, logits_all=True, n_threads=os.cpu_count(), verbose=False)
            row = {"file": f"{arch}-{quant}"}
            ex = ref["text_ids_example"]
            row["tokens_match"] = llm.tokenize(ex["text"].encode(), add_bos=True, special=True) == ex["ids"]
            if quant in ("F32", "F16"):
                worst = 0.0
                for i, n in enumerate(tensors["lengths"]):
                    got = logits_of(llm, tensors["input_ids"][i][:n])
                    want = tensors["logits"][i][:n].astype(np.float64)
                    worst = max(worst, float(np.abs(got - want).max() / np.abs(want).max()))
                row["logits_rel_diff_vs_transformers"] = worst
                g = greedy(llm, tensors["greedy_prompt_ids"], len(tensors["greedy_ids"]))
                row["greedy_match"] = g == list(map(int, tensors["greedy_ids"]))
            row["llamacpp_loss"] = loss(llm, texts, ref["eos_token_id"])
            row["mlxtune_loss"] = ours[f"{arch}-{quant}"]["loss"]
            row["transformers_f32_loss"] = ref["eval"]["loss"]
            row["loss_rel_diff_llamacpp_vs_mlxtune"] = abs(row["llamacpp_loss"] - row["mlxtune_loss"]) / row["mlxtune_loss"]
            rows.append(row)
            print(json.dumps(row), flush=True)
            del llm
    print("| file | tokens | logits rel. diff (vs transformers) | greedy | llama.cpp loss | mlxtune loss (same file) | rel. diff |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        lr = r.get("logits_rel_diff_vs_transformers")
        print(f"| {r['file']} | {'same' if r['tokens_match'] else 'DIFFER'} | "
              f"{'' if lr is None else f'{lr:.2e}'} | "
              f"{'' if 'greedy_match' not in r else ('same' if r['greedy_match'] else 'DIFFER')} | "
              f"{r['llamacpp_loss']:.5f} | {r['mlxtune_loss']:.5f} | {r['loss_rel_diff_llamacpp_vs_mlxtune']:.2e} |")


if __name__ == "__main__":
    main()
