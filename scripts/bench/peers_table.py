"""The markdown tables of one scripts/cuda/peers.sh (or matrix.sh) call: tokens/s (peak GiB)
of mlxtune and its peers per configuration, and our ratios; then real jobs (`mlxtune train`,
packed rows) against `bench train` at the same shape. Usage: peers_table.py OUT_DIR"""
import json, os, sys

def lines(path):
    if not os.path.exists(path):
        return []
    out = []
    for l in open(path):
        try:
            out.append(json.loads(l))
        except ValueError:
            out.append({"error": l.strip()[:200]})
    return out

def key(mode, b, t, ck, segments=0):
    """ck: False, True (every layer checkpointed) or N (only the first N layers)."""
    return (mode, int(b), int(t), ck if type(ck) is int else bool(ck), int(segments))

def cell(r):
    if r is None:
        return "–"
    if "error" in r:
        return "failed: " + ("out of memory" if "memory" in r["error"].lower() else r["error"][:60])
    return f"{r['tok']:,.0f} ({r['mem']:.1f} GiB)"

def main():
    d = sys.argv[1]
    cols = {}
    for o in lines(f"{d}/ours.jsonl"):
        r = o.get("result") if isinstance(o.get("result"), dict) else None
        if r is None:
            continue
        col = "mlxtune, kernels off" if "FUSED_KERNELS=0" in o.get("env", "") else "mlxtune"
        ck = r["grad_checkpoint"]
        layers = r.get("checkpoint_layers", 0)
        if ck and layers < r.get("layers", layers):
            ck = layers  # a partial checkpoint: its own row
        k = key(r["fine_tune_type"], r["batch"], r["seq"], ck, r.get("segments", 0))
        cols.setdefault(col, {})[k] = dict(tok=r["tokens_per_second"], mem=r["peak_memory_bytes"] / 2**30)
    for name, f in [("mlx-lm", "mlxlm"), ("mlx-lm + our settings", "mlxlm-tuned")]:
        for r in lines(f"{d}/{f}.jsonl"):
            if "mode" in r:
                v = r if "error" in r else dict(tok=r["tokens_per_s"], mem=r["peak_mem_gib"])
                cols.setdefault(name, {})[key(r["mode"], r["batch"], r["seq"], r["grad_ckpt"])] = v
    for r in lines(f"{d}/torch.jsonl"):
        if "mode" in r:
            name = "torch.compile" if r.get("compile") else "PyTorch eager"
            v = r if "error" in r else dict(tok=r["tokens_per_s"], mem=r["peak_mem_gib"])
            cols.setdefault(name, {})[key(r["mode"], r["batch"], r["seq"], r["grad_ckpt"])] = v
    names = ["mlxtune", "mlxtune, kernels off", "mlx-lm", "mlx-lm + our settings", "PyTorch eager", "torch.compile"]
    keys = sorted({k for c in cols.values() for k in c}, key=lambda k: (k[0], int(k[3]) and 1, k[4], k[1] * k[2], -int(k[3])))
    print("| config | " + " | ".join(names) + " | ours ÷ mlx-lm | ÷ mlx-lm + settings | ÷ torch.compile | ÷ eager |")
    print("|---" * (len(names) + 5) + "|")
    for k in keys:
        row = [cell(cols.get(n, {}).get(k)) for n in names]
        ours = cols.get("mlxtune", {}).get(k, {})
        ratios = []
        for n in ["mlx-lm", "mlx-lm + our settings", "torch.compile", "PyTorch eager"]:
            p = cols.get(n, {}).get(k, {})
            ok = "tok" in ours and "tok" in p
            ratios.append(f"{ours['tok'] / p['tok']:.2f}×" if ok else "–")
        name = f"{k[0]} {k[1]} × {k[2]}" + (" + ckpt" if k[3] else "")
        name += f" (first {k[3]} layers)" if type(k[3]) is int else ""
        name += f", packed ({k[4]} per row)" if k[4] else ""
        print(f"| {name} | " + " | ".join(row + ratios) + " |")
    jobs(d, cols.get("mlxtune", {}))

def jobs(d, ours):
    """Real jobs beside `bench train` of the same shape (causal rows, and packed rows)."""
    rows = [j for j in lines(f"{d}/jobs.jsonl") if isinstance(j.get("result"), dict)]
    if not rows:
        return
    print()
    print("| real job (`mlxtune train`, packed) | prefetch | tok/s (median) | peak GiB | ÷ bench, causal rows | ÷ bench, packed rows |")
    print("|---|---|---|---|---|---|")
    for j in rows:
        r = j["result"]
        tok = r["median_tokens_per_second"]
        ratio = lambda k: f"{tok / ours[k]['tok']:.3f}×" if k in ours else "–"
        causal = key("lora", r["batch"], r["seq"], False)
        packed = next((k for k in ours if k[:4] == causal[:4] and k[4]), None)
        print(f"| lora {r['batch']} × {r['seq']} | {'on' if j['prefetch'] else 'off'} | {tok:,} | "
              f"{r['peak_memory_gib']} | {ratio(causal)} | {ratio(packed)} |")

if __name__ == "__main__":
    main()
