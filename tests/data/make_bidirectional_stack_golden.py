#!/usr/bin/env python3
"""Golden files for the BidirectionalStack and import_pytorch_module tests (tests/test_model.cpp):
two-layer bidirectional nn.LSTM and nn.GRU modules.

Five sequences of lengths 6, 3, 0, 1, 5 (I=3, H=4, T=6), zero initial states, double
precision, each row run through the module on its own valid steps only, which is PyTorch's
packed-sequence semantics (the reverse direction of each layer reads the row's valid steps
from the last to the first; layer 1 reads both directions of layer 0). The padding of x holds
large values that must never be read. A random upstream gradient on the outputs gives every
gradient by torch autograd.

  lstm_bistack_pytorch.safetensors, lstm_bistack_golden.safetensors
      nn.LSTM(3, 4, num_layers=2, bidirectional=True): x, lengths, outputs (T, B, 8),
      d_outputs, grad_x, and grad_kernel_l{k}_{fw,bw}, grad_bias_l{k}_{fw,bw} in dynrnn's layout
  gru_bistack_pytorch.safetensors, gru_bistack_golden.safetensors
      nn.GRU(3, 4, num_layers=2, bidirectional=True): x, lengths, outputs, d_outputs, grad_x

Run with the system interpreter (Debian's python3-torch); the tests do not need torch:
    /usr/bin/python3 tests/data/make_bidirectional_stack_golden.py
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
META = {"source": "tests/data/make_bidirectional_stack_golden.py", "torch": torch.__version__}


def run(module, name, lstm):
    x = torch.randn(T, B, I, dtype=torch.float64)
    for b, length in enumerate(LENGTHS):
        x[length:, b] = 1e3 * torch.randn(T - length, I, dtype=torch.float64)
    x.requires_grad_(True)
    d_outputs = torch.randn(T, B, 2 * H, dtype=torch.float64)
    rows = [[torch.zeros(2 * H, dtype=torch.float64) for _ in range(B)] for _ in range(T)]
    for b, length in enumerate(LENGTHS):
        if length == 0:
            continue
        out, _ = module(x[:length, b:b + 1])  # zero initial states
        for t in range(length):
            rows[t][b] = out[t, 0]
    outputs = torch.stack([torch.stack(row) for row in rows])
    (outputs * d_outputs).sum().backward()
    write_safetensors(os.path.join(HERE, f"{name}_pytorch.safetensors"),
                      {n: p.detach().numpy() for n, p in module.named_parameters()}, META)
    golden = {
        "x": x.detach().numpy(), "lengths": np.array(LENGTHS, dtype=np.int64),
        "outputs": outputs.detach().numpy(), "d_outputs": d_outputs.numpy(), "grad_x": x.grad.numpy(),
    }
    if lstm:
        p = dict(module.named_parameters())
        for layer in range(2):
            for torch_suffix, ours in ((f"l{layer}", f"l{layer}_fw"), (f"l{layer}_reverse", f"l{layer}_bw")):
                golden["grad_kernel_" + ours] = ifgo_to_ijfo(np.concatenate(
                    [p["weight_ih_" + torch_suffix].grad.numpy().T, p["weight_hh_" + torch_suffix].grad.numpy().T]))
                golden["grad_bias_" + ours] = ifgo_to_ijfo(p["bias_ih_" + torch_suffix].grad.numpy())
    write_safetensors(os.path.join(HERE, f"{name}_golden.safetensors"), golden, META)


def main():
    torch.manual_seed(20261130)
    run(torch.nn.LSTM(I, H, num_layers=2, bidirectional=True).double(), "lstm_bistack", True)
    run(torch.nn.GRU(I, H, num_layers=2, bidirectional=True).double(), "gru_bistack", False)
    print("wrote lstm_bistack_* and gru_bistack_* to", HERE)


if __name__ == "__main__":
    main()
