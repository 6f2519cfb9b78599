#!/usr/bin/env python3
"""Golden files for tests/test_gru_rnn_import.cpp: GRU and vanilla RNN against PyTorch, and
TensorFlow 1.x's reset-before GRU against an independent NumPy reference.

The batch is the one of make_lstm_golden.py: five sequences of lengths 6, 3, 0, 1, 5
(I=3, H=4, T=6) from random initial states, double precision. Each row runs on its own
valid steps only, so no reference ever sees the padding (filled with large values, which
dynrnn must ignore). A random upstream gradient on the outputs (padding included) and on
the final h gives every gradient by torch autograd.

  gru_pytorch.safetensors          nn.GRU state dict (reset_after)
  gru_keras.safetensors            the same weights as Keras GRU(reset_after=True) stores them,
                                   converted here with NumPy: gates z, r, h; bias (2, 3H)
  gru_golden.safetensors           its inputs, outputs and gradients in dynrnn's layout
  gru_tensorflow.safetensors       TensorFlow 1.x GRUCell variables (reset_before):
                                   gates/kernel, gates/bias, candidate/kernel, candidate/bias
  gru_reset_before_golden.safetensors
                                   outputs from a NumPy implementation of TensorFlow's
                                   equations; gradients from autograd through the same
                                   equations in torch ops (the two forwards must agree)
  rnn_{tanh,relu}_pytorch.safetensors, rnn_{tanh,relu}_golden.safetensors
                                   nn.RNN with each nonlinearity

Run with the system interpreter (Debian's python3-torch); the tests do not need torch:
    /usr/bin/python3 tests/data/make_gru_rnn_golden.py
"""
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_lstm_golden import write_safetensors  # noqa: E402  (the same independent writer)

I, H, T = 3, 4, 6
LENGTHS = [6, 3, 0, 1, 5]
B = len(LENGTHS)
HERE = os.path.dirname(os.path.abspath(__file__))
META = {"source": "tests/data/make_gru_rnn_golden.py", "torch": torch.__version__}


def make_batch():
    """Inputs with noisy padding, initial state and upstream gradients, all leaves."""
    x = torch.randn(T, B, I, dtype=torch.float64)
    for b, length in enumerate(LENGTHS):
        x[length:, b] = 1e3 * torch.randn(T - length, I, dtype=torch.float64)
    h0 = torch.randn(B, H, dtype=torch.float64)
    d_outputs = torch.randn(T, B, H, dtype=torch.float64)
    d_h = torch.randn(B, H, dtype=torch.float64)
    x.requires_grad_(True)
    h0.requires_grad_(True)
    return x, h0, d_outputs, d_h


def run_rows(step_rows, x, h0):
    """dynamic_rnn's semantics, row by row: step_rows(xs (L, I), h (H)) -> (outputs (L, H), h_L)."""
    outputs = [[torch.zeros(H, dtype=torch.float64) for _ in range(B)] for _ in range(T)]
    h_n = []
    for b, length in enumerate(LENGTHS):
        if length == 0:
            h_n.append(h0[b])
            continue
        out, hb = step_rows(x[:length, b], h0[b])
        for t in range(length):
            outputs[t][b] = out[t]
        h_n.append(hb)
    return torch.stack([torch.stack(row) for row in outputs]), torch.stack(h_n)


def module_rows(module):
    """step_rows for a one-layer torch.nn.GRU or torch.nn.RNN."""
    def step_rows(xs, h):
        out, hb = module(xs.unsqueeze(1), h.view(1, 1, H))
        return out[:, 0], hb[0, 0]
    return step_rows


def golden(x, h0, d_outputs, d_h, outputs, h_n, grads):
    """The tensors every golden file holds, plus the parameter gradients `grads`."""
    tensors = {
        "x": x.detach().numpy(),
        "lengths": np.array(LENGTHS, dtype=np.int64),
        "h0": h0.detach().numpy(),
        "outputs": outputs.detach().numpy(),
        "h_n": h_n.detach().numpy(),
        "d_outputs": d_outputs.numpy(),
        "d_h_n": d_h.numpy(),
        "grad_x": x.grad.numpy(),
        "grad_h0": h0.grad.numpy(),
    }
    tensors.update(grads)
    return tensors


def backward(outputs, h_n, d_outputs, d_h):
    ((outputs * d_outputs).sum() + (h_n * d_h).sum()).backward()


def pytorch_gru():
    gru = torch.nn.GRU(I, H).double()
    x, h0, d_outputs, d_h = make_batch()
    outputs, h_n = run_rows(module_rows(gru), x, h0)
    backward(outputs, h_n, d_outputs, d_h)
    w_ih, w_hh = gru.weight_ih_l0.detach().numpy(), gru.weight_hh_l0.detach().numpy()
    b_ih, b_hh = gru.bias_ih_l0.detach().numpy(), gru.bias_hh_l0.detach().numpy()
    write_safetensors(os.path.join(HERE, "gru_pytorch.safetensors"),
                      {"weight_ih_l0": w_ih, "weight_hh_l0": w_hh, "bias_ih_l0": b_ih, "bias_hh_l0": b_hh}, META)

    def zrh(columns):  # PyTorch's r, z, n blocks in Keras's order z, r, h
        r, z, n = np.split(columns, 3, axis=-1)
        return np.concatenate([z, r, n], axis=-1)
    write_safetensors(os.path.join(HERE, "gru_keras.safetensors"),
                      {"kernel": zrh(w_ih.T), "recurrent_kernel": zrh(w_hh.T),
                       "bias": np.stack([zrh(b_ih), zrh(b_hh)])}, META)

    grads = {
        "grad_kernel": np.concatenate([gru.weight_ih_l0.grad.numpy().T, gru.weight_hh_l0.grad.numpy().T]),
        "grad_bias": gru.bias_ih_l0.grad.numpy(),
        "grad_recurrent_bias": gru.bias_hh_l0.grad.numpy(),
    }
    write_safetensors(os.path.join(HERE, "gru_golden.safetensors"),
                      golden(x, h0, d_outputs, d_h, outputs, h_n, grads), META)


def numpy_gru_reset_before(xs, h, gates_kernel, gates_bias, candidate_kernel, candidate_bias):
    """TensorFlow 1.x GRUCell's equations in NumPy, one row."""
    def sigmoid(v):
        return 1 / (1 + np.exp(-v))
    outputs = []
    for x in xs:
        ru = sigmoid(np.concatenate([x, h]) @ gates_kernel + gates_bias)
        r, u = ru[:H], ru[H:]
        c = np.tanh(np.concatenate([x, r * h]) @ candidate_kernel + candidate_bias)
        h = u * h + (1 - u) * c
        outputs.append(h)
    return np.stack(outputs), h


def tensorflow_gru():
    rng = np.random.default_rng(20261128)
    gates_kernel = rng.uniform(-0.8, 0.8, (I + H, 2 * H))
    gates_bias = rng.uniform(-0.8, 0.8, 2 * H)
    candidate_kernel = rng.uniform(-0.8, 0.8, (I + H, H))
    candidate_bias = rng.uniform(-0.8, 0.8, H)
    write_safetensors(os.path.join(HERE, "gru_tensorflow.safetensors"),
                      {"gates/kernel": gates_kernel, "gates/bias": gates_bias,
                       "candidate/kernel": candidate_kernel, "candidate/bias": candidate_bias}, META)

    params = [torch.tensor(p, requires_grad=True) for p in (gates_kernel, gates_bias, candidate_kernel, candidate_bias)]
    gk, gb, ck, cb = params

    def step_rows(xs, h):
        outputs = []
        for x in xs:
            ru = torch.sigmoid(torch.cat([x, h]) @ gk + gb)
            r, u = ru[:H], ru[H:]
            c = torch.tanh(torch.cat([x, r * h]) @ ck + cb)
            h = u * h + (1 - u) * c
            outputs.append(h)
        return torch.stack(outputs), h

    x, h0, d_outputs, d_h = make_batch()
    outputs, h_n = run_rows(step_rows, x, h0)
    # The NumPy reference gives the forward values; torch's must agree with it.
    reference = np.zeros((T, B, H))
    reference_h_n = h0.detach().numpy().copy()
    for b, length in enumerate(LENGTHS):
        if length:
            out, hb = numpy_gru_reset_before(x.detach().numpy()[:length, b], h0.detach().numpy()[b], gates_kernel,
                                             gates_bias, candidate_kernel, candidate_bias)
            reference[:length, b] = out
            reference_h_n[b] = hb
    assert np.allclose(reference, outputs.detach().numpy(), rtol=1e-13, atol=1e-14)
    assert np.allclose(reference_h_n, h_n.detach().numpy(), rtol=1e-13, atol=1e-14)
    backward(outputs, h_n, d_outputs, d_h)
    grads = {
        "grad_kernel": np.concatenate([gk.grad.numpy(), ck.grad.numpy()], axis=1),
        "grad_bias": np.concatenate([gb.grad.numpy(), cb.grad.numpy()]),
    }
    tensors = golden(x, h0, d_outputs, d_h, torch.from_numpy(reference), torch.from_numpy(reference_h_n), grads)
    write_safetensors(os.path.join(HERE, "gru_reset_before_golden.safetensors"), tensors, META)


def pytorch_rnn(nonlinearity):
    rnn = torch.nn.RNN(I, H, nonlinearity=nonlinearity).double()
    x, h0, d_outputs, d_h = make_batch()
    outputs, h_n = run_rows(module_rows(rnn), x, h0)
    backward(outputs, h_n, d_outputs, d_h)
    state = {name: p.detach().numpy() for name, p in rnn.named_parameters()}
    write_safetensors(os.path.join(HERE, f"rnn_{nonlinearity}_pytorch.safetensors"), state, META)
    assert np.allclose(rnn.bias_ih_l0.grad.numpy(), rnn.bias_hh_l0.grad.numpy(), rtol=1e-13, atol=1e-15)
    grads = {
        "grad_kernel": np.concatenate([rnn.weight_ih_l0.grad.numpy().T, rnn.weight_hh_l0.grad.numpy().T]),
        "grad_bias": rnn.bias_ih_l0.grad.numpy(),
    }
    write_safetensors(os.path.join(HERE, f"rnn_{nonlinearity}_golden.safetensors"),
                      golden(x, h0, d_outputs, d_h, outputs, h_n, grads), META)


def main():
    torch.manual_seed(20261128)
    pytorch_gru()
    tensorflow_gru()
    pytorch_rnn("tanh")
    pytorch_rnn("relu")
    print("wrote gru_*.safetensors and rnn_*.safetensors to", HERE)


if __name__ == "__main__":
    main()
