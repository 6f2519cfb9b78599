#!/usr/bin/env python3
"""Joins the benchmark results of one compare.sh run into one table.

    compare.py OUT_DIR

OUT_DIR holds dynrnn.json, gemm.json and, when they ran, onednn.json (Google Benchmark
JSON with aggregates) and pytorch.jsonl (benchmarks/peers/pytorch_lstm.py), plus
workloads.jsonl. Prints a Markdown table: workload x kind x threads x system, with the
median ms per step, GFLOP/s of the work done (valid steps only), time relative to dynrnn
(above 1: dynrnn is faster) and the share of the machine's GEMM peak at the same thread
count; then the LSTM at each precision, dynrnn against oneDNN (bfloat16: the cell's products
in bfloat16, oneDNN's bf16 LSTM; int8 inference: dynrnn's calibrated int8 products,
oneDNN's int8 LSTM); then the GEMM kernels at 2048^3 by precision (float32,
bfloat16, int8).

A training step does 3x the forward GEMM work when it computes dLoss/dx, and
(3 - I/(I+H))x when it skips it: dynrnn's train step and PyTorch's skip it (the LSTM reads
the data, which needs no gradient); dynrnn-dx and oneDNN compute it.
"""
import json
import os
import sys


def load_benchmark(path):
    """{(system, kind, workload, threads): median ms} from Google Benchmark JSON."""
    out = {}
    if not os.path.exists(path):
        return out
    with open(path) as f:
        data = json.load(f)
    for b in data["benchmarks"]:
        if b.get("aggregate_name", "median") != "median":
            continue
        parts = b["run_name"].split("/")
        threads = int(parts[3].split(":")[1])
        scale = {"ns": 1e-6, "us": 1e-3, "ms": 1.0, "s": 1e3}[b["time_unit"]]
        out[(parts[0], parts[1], parts[2], threads)] = b["real_time"] * scale
    return out


def main():
    d = sys.argv[1]
    workloads = {}
    with open(os.path.join(d, "workloads.jsonl")) as f:
        for line in f:
            w = json.loads(line)
            steps = sum(w["lengths"])
            workloads[w["name"]] = (2.0 * (w["input"] + w["hidden"]) * 4 * w["hidden"] * steps,
                                    w["input"] / (w["input"] + w["hidden"]))

    times = load_benchmark(os.path.join(d, "dynrnn.json"))
    times.update(load_benchmark(os.path.join(d, "onednn.json")))
    settings = {}
    path = os.path.join(d, "pytorch.jsonl")
    if os.path.exists(path):
        with open(path) as f:
            for line in f:
                r = json.loads(line)
                system = "pytorch-" + r["mode"]
                times[(system, r["kind"], r["workload"], r["threads"])] = r["ms"]
                settings[(system, r["kind"], r["workload"], r["threads"])] = r["setting"]

    gemm = {}  # (kernel, threads) -> GEMM GFLOP/s at 2048^3, median
    with open(os.path.join(d, "gemm.json")) as f:
        for b in json.load(f)["benchmarks"]:
            if b.get("aggregate_name", "median") == "median" and "/2048/" in b["run_name"]:
                parts = b["run_name"].split("/")
                gemm[(parts[1], int(parts[3].split(":")[1]))] = b["GFLOP"]
    peaks = {}  # (precision, threads) -> best kernel's GFLOP/s
    for (kernel, threads), gflops in gemm.items():
        key = (precision_of(kernel), threads)
        peaks[key] = max(peaks.get(key, 0.0), gflops)
    peak = {threads: p for (precision, threads), p in peaks.items() if precision == "float32"}

    print("| workload | kind | threads | system | ms/step | GFLOP/s | time / dynrnn | % GEMM peak |")
    print("|---|---|---|---|---|---|---|---|")
    order = ["dynrnn", "dynrnn-dx", "onednn", "pytorch-padded", "pytorch-packed"]
    with_dx = {"dynrnn-dx", "onednn"}  # training steps that compute dLoss/dx
    for name in workloads:
        for kind in ("train", "forward"):
            for threads in (1, 2):
                base = times.get(("dynrnn", kind, name, threads))
                for system in order:
                    ms = times.get((system, kind, name, threads))
                    if ms is None:
                        continue
                    forward, dx_share = workloads[name]
                    if kind == "forward":
                        flops = forward
                    else:
                        flops = forward * (3 if system in with_dx else 3 - dx_share)
                    gflops = flops / (ms * 1e-3) * 1e-9
                    ratio = "%.2f" % (ms / base) if base else "-"
                    share = "%.0f%%" % (100 * gflops / peak[threads]) if threads in peak else "-"
                    label = system
                    if (system, kind, name, threads) in settings:
                        label += " (%s)" % settings[(system, kind, name, threads)]
                    print("| %s | %s | %d | %s | %.3g | %.1f | %s | %s |"
                          % (name, kind, threads, label, ms, gflops, ratio, share))
    print_precisions(workloads, times)
    print()
    print("GEMM peak (best of Eigen, dynrnn's packed kernel, OpenBLAS and oneDNN's sgemm at 2048^3, median): "
          + ", ".join("%d thread(s) %.0f GFLOP/s" % (t, p) for t, p in sorted(peak.items())))
    print()
    print("GEMM at 2048^3 by precision (median GFLOP/s; share of that precision's best; speed against the")
    print("float32 peak). bf16 and int8: dynrnn's kernels as cpu_isa() chooses them and the portable ones")
    print("forced; oneDNN's matmul (bf16) and dnnl_gemm_u8s8s32 (int8).")
    print()
    print("| kernel | precision | threads | GFLOP/s | % of precision's best | x float32 peak |")
    print("|---|---|---|---|---|---|")
    for (kernel, threads), gflops in sorted(gemm.items(), key=lambda kv: (PRECISIONS.index(precision_of(kv[0][0])), kv[0][1], kv[0][0])):
        precision = precision_of(kernel)
        print("| %s | %s | %d | %.0f | %.0f%% | %s |"
              % (kernel, precision, threads, gflops, 100 * gflops / peaks[(precision, threads)],
                 "%.2f" % (gflops / peak[threads]) if threads in peak else "-"))


PRECISIONS = ["float32", "bfloat16", "int8"]
# (precision, kind) -> (dynrnn's system, oneDNN's): training like for like, dLoss/dx computed.
SYSTEMS = {("float32", "forward"): ("dynrnn", "onednn"), ("float32", "train"): ("dynrnn-dx", "onednn"),
           ("bfloat16", "forward"): ("dynrnn-bf16", "onednn-bf16"),
           ("bfloat16", "train"): ("dynrnn-bf16-dx", "onednn-bf16"),
           ("int8", "forward"): ("dynrnn-int8", "onednn-int8")}


def print_precisions(workloads, times):
    """The LSTM at each precision: ms per step of dynrnn and oneDNN, each one's speed-up over
    its own float32 step, and oneDNN's time over dynrnn's (above 1: dynrnn is faster)."""
    if not any(system == "dynrnn-bf16" for (system, _, _, _) in times):
        return
    print()
    print("LSTM by precision (median ms per step; training computes dLoss/dx in both systems).")
    print()
    print("| workload | kind | threads | precision | dynrnn ms | x dynrnn float32 | oneDNN ms | x oneDNN float32 "
          "| oneDNN / dynrnn |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name in workloads:
        for kind in ("train", "forward"):
            for threads in (1, 2):
                base = [times.get((system, kind, name, threads)) for system in SYSTEMS[("float32", kind)]]
                for precision in PRECISIONS:
                    if (precision, kind) not in SYSTEMS:
                        continue  # int8 is for inference
                    ours, theirs = (times.get((system, kind, name, threads)) for system in SYSTEMS[(precision, kind)])
                    if ours is None:
                        continue
                    cells = ["%.3g" % ours, "%.2f" % (base[0] / ours) if base[0] else "-",
                             "%.3g" % theirs if theirs else "-",
                             "%.2f" % (base[1] / theirs) if theirs and base[1] else "-",
                             "%.2f" % (theirs / ours) if theirs else "-"]
                    print("| %s | %s | %d | %s | %s |" % (name, kind, threads, precision, " | ".join(cells)))


def precision_of(kernel):
    """The arithmetic of a gemm_peak_benchmarks kernel name (its second path component)."""
    if "bf16" in kernel:
        return "bfloat16"
    if "int8" in kernel:
        return "int8"
    return "float32"


if __name__ == "__main__":
    main()
