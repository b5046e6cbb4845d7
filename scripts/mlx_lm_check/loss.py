"""Loads a model and our adapter directory with mlx-lm itself and prints the masked mean
cross-entropy of the given examples as JSON: the check that our adapters (LoRA and DoRA,
mlx-lm layout) mean to mlx-lm what they mean to us (crates/mlxtune-engine/tests/mlx_lm.rs).

usage: loss.py MODEL_DIR ADAPTER_DIR EXAMPLES.json
EXAMPLES.json: [{"ids": [...], "mask": [...]}]; mask[i] says ids[i] is a loss target.
"""

import json
import sys
from pathlib import Path

import mlx.core as mx
import mlx.nn as nn
from mlx_lm.tuner.utils import load_adapters
from mlx_lm.utils import load_model


def main() -> None:
    model_dir, adapter_dir, examples = sys.argv[1:4]
    model, _ = load_model(Path(model_dir))
    model = load_adapters(model, adapter_dir)
    model.eval()
    total, tokens = 0.0, 0
    for e in json.loads(Path(examples).read_text()):
        ids = mx.array(e["ids"])[None]
        mask = mx.array(e["mask"][1:], dtype=mx.float32)[None]
        logits = model(ids[:, :-1]).astype(mx.float32)
        ce = nn.losses.cross_entropy(logits, ids[:, 1:], reduction="none")
        total += (ce * mask).sum().item()
        tokens += int(mask.sum().item())
    print(json.dumps({"loss": total / tokens, "tokens": tokens}))


if __name__ == "__main__":
    main()
