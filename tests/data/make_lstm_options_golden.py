#!/usr/bin/env python3
"""Golden files for the LSTM options in tests/test_lstm_options_import.cpp.

The batch is the one of make_lstm_golden.py: five sequences of lengths 6, 3, 0, 1, 5 (I=3,
H=4, T=6) from random initial states, double precision, each row run on its own valid
steps only (the padding holds large values that dynrnn must ignore). A random upstream
gradient on the outputs (padding included) and on the final h and c gives every gradient.

  lstm_proj_pytorch.safetensors       nn.LSTM(proj_size=2) state dict (weight_hr_l0 included)
  lstm_proj_golden.safetensors        its inputs, outputs and gradients (torch autograd)
  lstm_options_tensorflow.safetensors TensorFlow 1.x LSTMCell(use_peepholes=True,
                                      cell_clip=0.6, num_proj=3, proj_clip=0.3, forget_bias=1)
                                      variables: kernel, bias, w_i_diag, w_f_diag, w_o_diag,
                                      projection/kernel
  lstm_options_golden.safetensors     outputs from a NumPy implementation of TensorFlow's
                                      equations; gradients from autograd through the same
                                      equations in torch ops (the two forwards must agree;
                                      torch.clamp passes the gradient at the boundary, as
                                      clip_by_value does)

Gradients are stored in dynrnn's layout: grad_kernel (I+R, 4H) gates i, j, f, o, grad_bias
(4H), grad_projection (H, R), grad_w_{i,f,o}_diag (H).

Run with the system interpreter (Debian's python3-torch); the tests do not need torch:
    /usr/bin/python3 tests/data/make_lstm_options_golden.py
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
META = {"source": "tests/data/make_lstm_options_golden.py", "torch": torch.__version__}


def make_batch(R):
    x = torch.randn(T, B, I, dtype=torch.float64)
    for b, length in enumerate(LENGTHS):
        x[length:, b] = 1e3 * torch.randn(T - length, I, dtype=torch.float64)
    h0 = torch.randn(B, R, dtype=torch.float64)
    c0 = torch.randn(B, H, dtype=torch.float64)
    upstream = (torch.randn(T, B, R, dtype=torch.float64), torch.randn(B, R, dtype=torch.float64),
                torch.randn(B, H, dtype=torch.float64))
    for t in (x, h0, c0):
        t.requires_grad_(True)
    return x, h0, c0, upstream


def run_rows(step_rows, x, h0, c0, R):
    """dynamic_rnn's semantics row by row: step_rows(xs (L, I), h, c) -> (outputs (L, R), h_L, c_L)."""
    outputs = [[torch.zeros(R, dtype=torch.float64) for _ in range(B)] for _ in range(T)]
    h_n, c_n = [], []
    for b, length in enumerate(LENGTHS):
        if length == 0:
            h_n.append(h0[b])
            c_n.append(c0[b])
            continue
        out, hb, cb = step_rows(x[:length, b], h0[b], c0[b])
        for t in range(length):
            outputs[t][b] = out[t]
        h_n.append(hb)
        c_n.append(cb)
    return torch.stack([torch.stack(row) for row in outputs]), torch.stack(h_n), torch.stack(c_n)


def backward_and_golden(x, h0, c0, upstream, outputs, h_n, c_n, grads, forward_values=None):
    d_outputs, d_h, d_c = upstream
    ((outputs * d_outputs).sum() + (h_n * d_h).sum() + (c_n * d_c).sum()).backward()
    values = forward_values or (outputs.detach().numpy(), h_n.detach().numpy(), c_n.detach().numpy())
    tensors = {
        "x": x.detach().numpy(), "lengths": np.array(LENGTHS, dtype=np.int64),
        "h0": h0.detach().numpy(), "c0": c0.detach().numpy(),
        "outputs": values[0], "h_n": values[1], "c_n": values[2],
        "d_outputs": d_outputs.numpy(), "d_h_n": d_h.numpy(), "d_c_n": d_c.numpy(),
        "grad_x": x.grad.numpy(), "grad_h0": h0.grad.numpy(), "grad_c0": c0.grad.numpy(),
    }
    tensors.update({name: g() for name, g in grads.items()})
    return tensors


def pytorch_proj():
    R = 2
    lstm = torch.nn.LSTM(I, H, proj_size=R).double()
    x, h0, c0, upstream = make_batch(R)

    def step_rows(xs, h, c):
        out, (hb, cb) = lstm(xs.unsqueeze(1), (h.view(1, 1, R), c.view(1, 1, H)))
        return out[:, 0], hb[0, 0], cb[0, 0]
    outputs, h_n, c_n = run_rows(step_rows, x, h0, c0, R)
    write_safetensors(os.path.join(HERE, "lstm_proj_pytorch.safetensors"),
                      {name: p.detach().numpy() for name, p in lstm.named_parameters()}, META)
    grads = {
        "grad_kernel": lambda: ifgo_to_ijfo(np.concatenate([lstm.weight_ih_l0.grad.numpy().T,
                                                            lstm.weight_hh_l0.grad.numpy().T])),
        "grad_bias": lambda: ifgo_to_ijfo(lstm.bias_ih_l0.grad.numpy()),
        "grad_projection": lambda: lstm.weight_hr_l0.grad.numpy().T.copy(),
    }
    write_safetensors(os.path.join(HERE, "lstm_proj_golden.safetensors"),
                      backward_and_golden(x, h0, c0, upstream, outputs, h_n, c_n, grads), META)


CELL_CLIP, R_TF, PROJ_CLIP, FORGET_BIAS = 0.6, 3, 0.3, 1.0


def numpy_lstm(xs, h, c, kernel, bias, w_i, w_f, w_o, projection):
    """TensorFlow 1.x LSTMCell with every option, in NumPy, one row."""
    def sigmoid(v):
        return 1 / (1 + np.exp(-v))
    outputs = []
    for x in xs:
        i, j, f, o = np.split(np.concatenate([x, h]) @ kernel + bias, 4)
        c = sigmoid(f + FORGET_BIAS + w_f * c) * c + sigmoid(i + w_i * c) * np.tanh(j)
        c = np.clip(c, -CELL_CLIP, CELL_CLIP)
        m = sigmoid(o + w_o * c) * np.tanh(c)
        h = np.clip(m @ projection, -PROJ_CLIP, PROJ_CLIP)
        outputs.append(h)
    return np.stack(outputs), h, c


def tensorflow_options():
    R = R_TF
    rng = np.random.default_rng(20261128)
    params = {
        "kernel": rng.uniform(-0.9, 0.9, (I + R, 4 * H)), "bias": rng.uniform(-0.9, 0.9, 4 * H),
        "w_i_diag": rng.uniform(-0.9, 0.9, H), "w_f_diag": rng.uniform(-0.9, 0.9, H),
        "w_o_diag": rng.uniform(-0.9, 0.9, H), "projection/kernel": rng.uniform(-0.9, 0.9, (H, R)),
    }
    write_safetensors(os.path.join(HERE, "lstm_options_tensorflow.safetensors"), params, META)
    tp = {name: torch.tensor(v, requires_grad=True) for name, v in params.items()}

    def step_rows(xs, h, c):
        outputs = []
        for x in xs:
            i, j, f, o = torch.split(torch.cat([x, h]) @ tp["kernel"] + tp["bias"], H)
            c = torch.sigmoid(f + FORGET_BIAS + tp["w_f_diag"] * c) * c + torch.sigmoid(i + tp["w_i_diag"] * c) * torch.tanh(j)
            c = torch.clamp(c, -CELL_CLIP, CELL_CLIP)
            m = torch.sigmoid(o + tp["w_o_diag"] * c) * torch.tanh(c)
            h = torch.clamp(m @ tp["projection/kernel"], -PROJ_CLIP, PROJ_CLIP)
            outputs.append(h)
        return torch.stack(outputs), h, c

    x, h0, c0, upstream = make_batch(R)
    outputs, h_n, c_n = run_rows(step_rows, x, h0, c0, R)
    reference = np.zeros((T, B, R))
    ref_h, ref_c = h0.detach().numpy().copy(), c0.detach().numpy().copy()
    clipped_c = clipped_h = 0
    for b, length in enumerate(LENGTHS):
        if length:
            out, hb, cb = numpy_lstm(x.detach().numpy()[:length, b], ref_h[b], ref_c[b], params["kernel"],
                                     params["bias"], params["w_i_diag"], params["w_f_diag"], params["w_o_diag"],
                                     params["projection/kernel"])
            reference[:length, b], ref_h[b], ref_c[b] = out, hb, cb
            clipped_h += int(np.sum(np.abs(out) == PROJ_CLIP))
    clipped_c = int(np.sum(np.abs(ref_c) == CELL_CLIP))
    assert clipped_h > 0, "no output reached proj_clip: the golden would not test it"
    assert np.allclose(reference, outputs.detach().numpy(), rtol=1e-13, atol=1e-14)
    assert np.allclose(ref_h, h_n.detach().numpy(), rtol=1e-13, atol=1e-14)
    assert np.allclose(ref_c, c_n.detach().numpy(), rtol=1e-13, atol=1e-14)
    grads = {
        "grad_kernel": lambda: tp["kernel"].grad.numpy(), "grad_bias": lambda: tp["bias"].grad.numpy(),
        "grad_w_i_diag": lambda: tp["w_i_diag"].grad.numpy(), "grad_w_f_diag": lambda: tp["w_f_diag"].grad.numpy(),
        "grad_w_o_diag": lambda: tp["w_o_diag"].grad.numpy(),
        "grad_projection": lambda: tp["projection/kernel"].grad.numpy(),
    }
    golden = backward_and_golden(x, h0, c0, upstream, outputs, h_n, c_n, grads, (reference, ref_h, ref_c))
    write_safetensors(os.path.join(HERE, "lstm_options_golden.safetensors"), golden, META)
    print(f"TensorFlow options: {clipped_h} outputs at proj_clip, {clipped_c} final c at cell_clip")


def main():
    torch.manual_seed(20261128)
    pytorch_proj()
    tensorflow_options()
    print("wrote lstm_proj_*.safetensors and lstm_options_*.safetensors to", HERE)


if __name__ == "__main__":
    main()
