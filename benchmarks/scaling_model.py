#!/usr/bin/env python3
"""On-paper scaling of dynrnn's data parallelism to many machines (RESULTS.md).

Each machine trains on its share of every global batch, then the gradients are summed with a
ring allreduce, whose time on N machines for S bytes is

    T(N) = 2 (N - 1) / N * S / bandwidth + 2 (N - 1) * latency

(each of the 2 (N - 1) ring steps sends S / N bytes and pays one message latency). The
overlap of the allreduce with the backward pass hid nothing measurable on the 2-core machine
(benchmarks/data_parallel.sh), so the model counts it in full:

    efficiency(N) = compute / (compute + T(N))

with `compute` the measured step time of one machine (here: 2 cores, 1 process x 2 threads,
the workload's 64 sequences). A global batch G split over N machines gives each G / N
sequences; scaling stops paying when the allreduce takes as long as the compute, at

    G_half = N * T(N) / (compute per sequence)

below which more than half of each step is communication (at least one sequence per machine).
The same figures for a machine 16 times faster (a 32-core server instead of this 2-core VM,
taken as scaling perfectly) show where communication starts to matter.

    python3 benchmarks/scaling_model.py M=36.08 L=325.77   # step ms at 64 sequences
"""
import sys

# Gradient bytes in float: LSTM (I + H) x 4H kernel and 4H bias, Dense(H, 10) head.
PARAMETERS = {"M": (128, 256), "L": (512, 512)}
LINKS = [  # name, bytes/s, latency per message in s (assumed: TCP over 10 GbE; RDMA at 100 Gbit/s)
    ("10 Gbit/s", 10e9 / 8, 25e-6),
    ("100 Gbit/s", 100e9 / 8, 3e-6),
]
MACHINES = [2, 8, 64]
BATCH = 64
FASTER = 16


def gradient_bytes(i, h):
    return 4 * ((i + h) * 4 * h + 4 * h + h * 10 + 10)


def ring(n, size, bandwidth, latency):
    return 2 * (n - 1) / n * size / bandwidth + 2 * (n - 1) * latency


def main(argv):
    steps = dict(a.split("=") for a in argv[1:]) if len(argv) > 1 else {"M": "36.08", "L": "325.77"}
    print("| workload | gradients | link | machines | allreduce ms | efficiency, 64 seq/machine "
          f"(this VM / {FASTER}x faster) | global batch where it stops paying (this VM / {FASTER}x faster) |")
    print("|---|---|---|---|---|---|---|")
    for name, ms in steps.items():
        size = gradient_bytes(*PARAMETERS[name])
        for link, bandwidth, latency in LINKS:
            for n in MACHINES:
                t = ring(n, size, bandwidth, latency)
                cells_e, cells_g = [], []
                for speed in (1, FASTER):
                    compute = float(ms) / 1e3 / speed
                    cells_e.append(f"{100 * compute / (compute + t):.1f}%")
                    cells_g.append(f"{max(n, round(n * t / (compute / BATCH))):,}")
                print(f"| {name} | {size / 1e6:.2f} MB | {link} | {n} | {1e3 * t:.2f} | {' / '.join(cells_e)} "
                      f"| {' / '.join(cells_g)} |")

if __name__ == "__main__":
    main(sys.argv)
