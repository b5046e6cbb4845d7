#!/usr/bin/env python3
"""Loads what scripts/peft_check/prepare.sh wrote with transformers and PEFT (f32) and
compares their eval loss with mlxtune's: the base model with the PEFT adapter
(PeftModel.from_pretrained) and the fused model directory (AutoModelForCausalLM).

Loss as `mlxtune eval` defines it for `text` records: the tokenizer's encoding with its
special tokens, EOS appended unless last, token-weighted mean next-token cross-entropy.
Run where torch, transformers and peft are installed:
    python3 scripts/peft_check/check.py .device/peft_check
"""
import json
import os
import sys

import torch
import transformers
import peft
from peft import PeftModel
from transformers import AutoModelForCausalLM, AutoTokenizer


def loss(model, tok, texts):
    total, count = 0.0, 0
    for t in texts:
        ids = tok(t, add_special_tokens=True)["input_ids"]
        if tok.eos_token_id is not None and (not ids or ids[-1] != tok.eos_token_id):
            ids = ids + [tok.eos_token_id]
        x = torch.tensor([ids])
        with torch.no_grad():
            logits = model(x).logits.float()
        ce = torch.nn.functional.cross_entropy(logits[0, :-1], x[0, 1:], reduction="sum")
        total += ce.item()
        count += len(ids) - 1
    return total / count


def main():
    root = sys.argv[1]
    texts = [json.loads(l)["text"] for l in open(os.path.join(root, "data.jsonl"))]
    cases = json.load(open(os.path.join(root, "cases.json")))
    rows = []
    for c in cases:
        base_dir = os.path.join("tests/fixtures/models", c["arch"])
        tok = AutoTokenizer.from_pretrained(base_dir)
        base = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32).eval()
        base_loss = loss(base, tok, texts)
        adapted = PeftModel.from_pretrained(base, os.path.join(c["dir"], "peft")).eval()
        peft_loss = loss(adapted, tok, texts)
        fused = AutoModelForCausalLM.from_pretrained(os.path.join(c["dir"], "fused"), dtype=torch.float32).eval()
        fused_loss = loss(fused, tok, texts)
        rows.append({**c, "transformers_base_loss": base_loss, "peft_loss": peft_loss, "fused_loss": fused_loss,
                     "peft_diff": abs(peft_loss - c["mlxtune_loss"]), "fused_diff": abs(fused_loss - c["mlxtune_loss"])})
        print(json.dumps(rows[-1]), flush=True)
    print(f"transformers {transformers.__version__}, peft {peft.__version__}, torch {torch.__version__}")
    worst = max(max(r["peft_diff"], r["fused_diff"]) for r in rows)
    print(f"largest |loss difference| against mlxtune: {worst:.3g}")
    sys.exit(0 if worst < 1e-4 else 1)


if __name__ == "__main__":
    main()
