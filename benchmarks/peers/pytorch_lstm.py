#!/usr/bin/env python3
"""PyTorch's nn.LSTM on dynrnn's benchmark workloads, for comparison.

Times forward inference and a full training step (LSTM, each row's last valid output,
Linear(H, 15), cross-entropy on logits, backward, torch.optim.RMSprop) in float32, at 1
and 2 threads, both on the padded batch and, for the ragged workloads (S and M-var),
through pack_padded_sequence.

Debian's torch has two thread pools, its OpenMP pool and OpenBLAS's, and 2 threads in
each oversubscribe 2 cores. So every thread count is run under each way of splitting it
between the pools (a fresh process per setting, since OpenBLAS reads its setting at load),
and the best setting per workload is reported, with the setting named.

Usage (Debian's python3-torch belongs to the system interpreter):
    dynrnn_benchmarks --workloads-json > workloads.jsonl
    /usr/bin/python3 benchmarks/peers/pytorch_lstm.py workloads.jsonl [--repetitions 5]

Prints one JSON object per line: system, kind (forward|train), workload, threads, mode
(padded|packed), ms (median over repetitions), setting.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time

CLASSES = 15

# (omp threads, openblas threads) per total thread count.
SETTINGS = {1: [(1, 1)], 2: [(2, 2), (1, 2), (2, 1)]}


def time_ms(fn, repetitions, min_seconds=0.2):
    """Median milliseconds per call over `repetitions` timed batches of calls."""
    fn()  # warm up
    start = time.perf_counter()
    fn()
    once = time.perf_counter() - start
    calls = max(1, int(min_seconds / max(once, 1e-6)))
    samples = []
    for _ in range(repetitions):
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        samples.append((time.perf_counter() - start) / calls * 1e3)
    return statistics.median(samples)


def worker(workloads, repetitions):
    import torch
    from torch.nn.utils.rnn import pack_padded_sequence

    torch.manual_seed(0)
    for w in workloads:
        T, B, I, H = w["max_time"], w["batch"], w["input"], w["hidden"]
        lengths = torch.tensor(w["lengths"])
        ragged = min(w["lengths"]) != max(w["lengths"])
        x = torch.rand(T, B, I)
        labels = torch.randint(0, CLASSES, (B,))
        lstm = torch.nn.LSTM(I, H)
        dense = torch.nn.Linear(H, CLASSES)
        opt = torch.optim.RMSprop(list(lstm.parameters()) + list(dense.parameters()), lr=0.001)
        rows = torch.arange(B)

        def last_output(mode):
            if mode == "packed":
                _, (h, _) = lstm(pack_padded_sequence(x, lengths, enforce_sorted=False))
                return h[0]
            out, _ = lstm(x)
            return out[lengths - 1, rows]  # each row's last valid output

        for mode in (["padded", "packed"] if ragged else ["padded"]):
            def forward():
                with torch.no_grad():
                    last_output(mode)

            def train():
                opt.zero_grad()
                loss = torch.nn.functional.cross_entropy(dense(last_output(mode)), labels)
                loss.backward()
                opt.step()

            for kind, fn in (("forward", forward), ("train", train)):
                print(json.dumps({"kind": kind, "workload": w["name"], "mode": mode,
                                  "ms": time_ms(fn, repetitions)}), flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("workloads", help="JSON lines from dynrnn_benchmarks --workloads-json")
    parser.add_argument("--repetitions", type=int, default=5)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    with open(args.workloads) as f:
        workloads = [json.loads(line) for line in f if line.strip()]

    if args.worker:
        worker(workloads, args.repetitions)
        return

    best = {}
    for threads, settings in SETTINGS.items():
        for omp, blas in settings:
            env = dict(os.environ, OMP_NUM_THREADS=str(omp), OPENBLAS_NUM_THREADS=str(blas),
                       MKL_NUM_THREADS=str(omp))
            setting = "OMP_NUM_THREADS=%d OPENBLAS_NUM_THREADS=%d" % (omp, blas)
            print("pytorch_lstm: %d thread(s), %s" % (threads, setting), file=sys.stderr, flush=True)
            out = subprocess.run([sys.executable, __file__, args.workloads, "--worker",
                                  "--repetitions", str(args.repetitions)],
                                 env=env, check=True, capture_output=True, text=True).stdout
            for line in out.splitlines():
                r = json.loads(line)
                key = (r["kind"], r["workload"], r["mode"], threads)
                if key not in best or r["ms"] < best[key]["ms"]:
                    best[key] = dict(r, system="pytorch", threads=threads, setting=setting)
    import torch
    for r in best.values():
        r["version"] = torch.__version__
        print(json.dumps(r))


if __name__ == "__main__":
    main()
