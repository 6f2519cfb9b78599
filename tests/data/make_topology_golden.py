#!/usr/bin/env python3
"""Golden files for tests/test_topologies.cpp: a 2-layer and a bidirectional nn.LSTM.

The batch is the one of make_lstm_golden.py: five sequences of lengths 6, 3, 0, 1, 5 (I=3,
H=4, T=6) from random initial states, double precision, each row run on its own valid
steps only (the padding holds large values that dynrnn must ignore). For the bidirectional
LSTM that is exactly PyTorch's packed-sequence semantics: the reverse direction reads each
row's valid steps from the last to the first. A random upstream gradient on the outputs
(padding included) and on the final states gives every gradient by torch autograd.

  lstm_2layer_pytorch.safetensors, lstm_2layer_golden.safetensors
      nn.LSTM(3, 4, num_layers=2); h0, c0, h_n, c_n are (2, B, H), layer 0 first;
      grad_kernel_l{k}, grad_bias_l{k} in dynrnn's layout
  lstm_bidirectional_pytorch.safetensors, lstm_bidirectional_golden.safetensors
      nn.LSTM(3, 4, bidirectional=True); outputs are (T, B, 2H), forward features first;
      states (2, B, H), forward direction first; grad_kernel_fw, grad_kernel_bw, ...

Run with the system interpreter (Debian's python3-torch); the tests do not need torch:
    /usr/bin/python3 tests/data/make_topology_golden.py
"""
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_lstm_golden import ifgo_to_ijfo, write_safetensors  # noqa: E402

I, H, T = 3, 4, 6
LENGTHS = [6, 3, 0, 1, 5]
B = len(LENGTHS)
HERE = os.path.dirname(os.path.abspath(__file__))
META = {"source": "tests/data/make_topology_golden.py", "torch": torch.__version__}


def run(lstm, name, width, suffixes):
    """Runs `lstm` (2 layers or 2 directions: its state has 2 slices) row by row and writes
    its state dict and golden file; `suffixes` name the two slices' parameters and gradients."""
    x = torch.randn(T, B, I, dtype=torch.float64)
    for b, length in enumerate(LENGTHS):
        x[length:, b] = 1e3 * torch.randn(T - length, I, dtype=torch.float64)
    h0 = torch.randn(2, B, H, dtype=torch.float64)
    c0 = torch.randn(2, B, H, dtype=torch.float64)
    d_outputs = torch.randn(T, B, width, dtype=torch.float64)
    d_h = torch.randn(2, B, H, dtype=torch.float64)
    d_c = torch.randn(2, B, H, dtype=torch.float64)
    for t in (x, h0, c0):
        t.requires_grad_(True)
    outputs = [[torch.zeros(width, dtype=torch.float64) for _ in range(B)] for _ in range(T)]
    h_n, c_n = [], []
    for b, length in enumerate(LENGTHS):
        if length == 0:
            h_n.append(h0[:, b])
            c_n.append(c0[:, b])
            continue
        out, (hb, cb) = lstm(x[:length, b:b + 1], (h0[:, b:b + 1].contiguous(), c0[:, b:b + 1].contiguous()))
        for t in range(length):
            outputs[t][b] = out[t, 0]
        h_n.append(hb[:, 0])
        c_n.append(cb[:, 0])
    outputs = torch.stack([torch.stack(row) for row in outputs])
    h_n, c_n = torch.stack(h_n, dim=1), torch.stack(c_n, dim=1)
    ((outputs * d_outputs).sum() + (h_n * d_h).sum() + (c_n * d_c).sum()).backward()
    write_safetensors(os.path.join(HERE, f"{name}_pytorch.safetensors"),
                      {n: p.detach().numpy() for n, p in lstm.named_parameters()}, META)
    golden = {
        "x": x.detach().numpy(), "lengths": np.array(LENGTHS, dtype=np.int64),
        "h0": h0.detach().numpy(), "c0": c0.detach().numpy(),
        "outputs": outputs.detach().numpy(), "h_n": h_n.detach().numpy(), "c_n": c_n.detach().numpy(),
        "d_outputs": d_outputs.numpy(), "d_h_n": d_h.numpy(), "d_c_n": d_c.numpy(),
        "grad_x": x.grad.numpy(), "grad_h0": h0.grad.numpy(), "grad_c0": c0.grad.numpy(),
    }
    for torch_suffix, golden_suffix in suffixes:
        p = dict(lstm.named_parameters())
        golden["grad_kernel_" + golden_suffix] = ifgo_to_ijfo(np.concatenate(
            [p["weight_ih_" + torch_suffix].grad.numpy().T, p["weight_hh_" + torch_suffix].grad.numpy().T]))
        golden["grad_bias_" + golden_suffix] = ifgo_to_ijfo(p["bias_ih_" + torch_suffix].grad.numpy())
    write_safetensors(os.path.join(HERE, f"{name}_golden.safetensors"), golden, META)


def main():
    torch.manual_seed(20261128)
    run(torch.nn.LSTM(I, H, num_layers=2).double(), "lstm_2layer", H, [("l0", "l0"), ("l1", "l1")])
    run(torch.nn.LSTM(I, H, bidirectional=True).double(), "lstm_bidirectional", 2 * H,
        [("l0", "fw"), ("l0_reverse", "bw")])
    print("wrote lstm_2layer_* and lstm_bidirectional_* to", HERE)


if __name__ == "__main__":
    main()
