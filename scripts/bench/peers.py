"""Runs the peers' baselines (../shared/bench/torch_baseline.py, mlxlm_bench.py, copied
into .device/b/bench) at chosen shapes, one JSON line each, in the call that measures
mlxtune (scripts/cuda/peers.sh).
Usage: peers.py torch|mlxlm BENCH_DIR "mode,batch,seq,ckpt,compile;..."  (ckpt/compile 0|1)"""
import json, sys

def main():
    which, bench_dir, configs = sys.argv[1], sys.argv[2], sys.argv[3]
    sys.path.insert(0, bench_dir)
    if which == "torch":
        import torch_baseline as m
        run = lambda mode, b, t, ck, comp: m.run(mode, b, t, steps=5, warm=2, ckpt=ck, compile_=comp)
    else:
        import mlxlm_bench as m
        run = lambda mode, b, t, ck, comp: m.run(mode, b, t, ck, comp)
    for c in configs.split(";"):
        mode, b, t, ck, comp = c.split(",")
        b, t, ck, comp = int(b), int(t), ck == "1", comp == "1"
        try:
            run(mode, b, t, ck, comp)
        except Exception as e:  # an out-of-memory shape is a result too
            print(json.dumps(dict(impl=which, mode=mode, batch=b, seq=t, grad_ckpt=ck, compile=comp,
                                  error=repr(e)[:300])), flush=True)
        if which == "torch":
            import torch; torch.cuda.empty_cache()
        else:
            import mlx.core as mx; mx.clear_cache()

if __name__ == "__main__":
    main()
