#!/usr/bin/env python3
"""Golden files for tests/test_lstm_import.cpp, made with PyTorch's nn.LSTM.

One double-precision nn.LSTM (I=3, H=4) runs a batch of five sequences of lengths
6, 3, 0, 1, 5 from random initial states. Each row runs through nn.LSTM on its own
valid steps only, so PyTorch never sees the padding (filled with large values, which
dynrnn must ignore). A random upstream gradient on the outputs (padding included) and
on the final h and c gives the gradients by autograd.

The weights are written in three layouts, each converted here with NumPy
independently of dynrnn's C++ conversion:

  lstm_pytorch.safetensors     weight_ih_l0, weight_hh_l0, bias_ih_l0, bias_hh_l0 (state dict)
  lstm_keras.safetensors       kernel (I, 4H), recurrent_kernel (H, 4H), bias: gates i, f, c, o
  lstm_tensorflow.safetensors  kernel (I+H, 4H), bias (4H): gates i, j, f, o, for forget_bias 1

and lstm_golden.safetensors holds the inputs, outputs, final states, upstream
gradients and the parameter gradients in TensorFlow's (= dynrnn's) layout.

The safetensors files are written by the small writer below, not by the safetensors
package, so they also check dynrnn's reader against an independent writer.

Run with the system interpreter (Debian's python3-torch); the tests do not need torch:
    /usr/bin/python3 tests/data/make_lstm_golden.py
"""
import json
import os
import struct

import numpy as np
import torch

I, H, T = 3, 4, 6
LENGTHS = [6, 3, 0, 1, 5]
B = len(LENGTHS)
TF_FORGET_BIAS = 1.0
HERE = os.path.dirname(os.path.abspath(__file__))

DTYPES = {np.dtype(np.float64): "F64", np.dtype(np.float32): "F32", np.dtype(np.int64): "I64"}


def write_safetensors(path, tensors, metadata):
    header, blobs, offset = {"__metadata__": metadata}, [], 0
    for name, array in tensors.items():
        data = np.ascontiguousarray(array).astype(array.dtype.newbyteorder("<")).tobytes()
        header[name] = {"dtype": DTYPES[array.dtype], "shape": list(array.shape),
                        "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for blob in blobs:
            f.write(blob)


def ifgo_to_ijfo(columns):
    """Reorders the four H-wide gate blocks of the last axis from i, f, g, o to i, g, f, o."""
    i, f, g, o = np.split(columns, 4, axis=-1)
    return np.concatenate([i, g, f, o], axis=-1)


def main():
    torch.manual_seed(20261128)
    lstm = torch.nn.LSTM(I, H).double()
    x = torch.randn(T, B, I, dtype=torch.float64)
    for b, length in enumerate(LENGTHS):
        x[length:, b] = 1e3 * torch.randn(T - length, I, dtype=torch.float64)
    h0 = torch.randn(B, H, dtype=torch.float64)
    c0 = torch.randn(B, H, dtype=torch.float64)
    d_outputs = torch.randn(T, B, H, dtype=torch.float64)
    d_h = torch.randn(B, H, dtype=torch.float64)
    d_c = torch.randn(B, H, dtype=torch.float64)
    for t in (x, h0, c0):
        t.requires_grad_(True)

    outputs = [[torch.zeros(H, dtype=torch.float64) for _ in range(B)] for _ in range(T)]
    h_n, c_n = [], []
    for b, length in enumerate(LENGTHS):
        if length == 0:
            h_n.append(h0[b])
            c_n.append(c0[b])
            continue
        out, (hb, cb) = lstm(x[:length, b:b + 1], (h0[b:b + 1].unsqueeze(0), c0[b:b + 1].unsqueeze(0)))
        for t in range(length):
            outputs[t][b] = out[t, 0]
        h_n.append(hb[0, 0])
        c_n.append(cb[0, 0])
    outputs = torch.stack([torch.stack(row) for row in outputs])
    h_n, c_n = torch.stack(h_n), torch.stack(c_n)
    loss = (outputs * d_outputs).sum() + (h_n * d_h).sum() + (c_n * d_c).sum()
    loss.backward()

    w_ih = lstm.weight_ih_l0.detach().numpy()
    w_hh = lstm.weight_hh_l0.detach().numpy()
    b_ih = lstm.bias_ih_l0.detach().numpy()
    b_hh = lstm.bias_hh_l0.detach().numpy()
    meta = {"source": "tests/data/make_lstm_golden.py", "torch": torch.__version__}

    write_safetensors(os.path.join(HERE, "lstm_pytorch.safetensors"),
                      {"weight_ih_l0": w_ih, "weight_hh_l0": w_hh, "bias_ih_l0": b_ih, "bias_hh_l0": b_hh}, meta)
    write_safetensors(os.path.join(HERE, "lstm_keras.safetensors"),
                      {"kernel": w_ih.T.copy(), "recurrent_kernel": w_hh.T.copy(), "bias": b_ih + b_hh}, meta)
    tf_kernel = ifgo_to_ijfo(np.concatenate([w_ih.T, w_hh.T], axis=0))
    tf_bias = ifgo_to_ijfo(b_ih + b_hh)
    tf_bias[2 * H:3 * H] -= TF_FORGET_BIAS  # TensorFlow adds it back at run time
    write_safetensors(os.path.join(HERE, "lstm_tensorflow.safetensors"), {"kernel": tf_kernel, "bias": tf_bias}, meta)

    g_kernel = ifgo_to_ijfo(np.concatenate([lstm.weight_ih_l0.grad.numpy().T, lstm.weight_hh_l0.grad.numpy().T], axis=0))
    g_bias = ifgo_to_ijfo(lstm.bias_ih_l0.grad.numpy())
    assert np.allclose(lstm.bias_ih_l0.grad.numpy(), lstm.bias_hh_l0.grad.numpy(), rtol=1e-13, atol=1e-15)
    golden = {
        "x": x.detach().numpy(),
        "lengths": np.array(LENGTHS, dtype=np.int64),
        "h0": h0.detach().numpy(),
        "c0": c0.detach().numpy(),
        "outputs": outputs.detach().numpy(),
        "h_n": h_n.detach().numpy(),
        "c_n": c_n.detach().numpy(),
        "d_outputs": d_outputs.numpy(),
        "d_h_n": d_h.numpy(),
        "d_c_n": d_c.numpy(),
        "grad_kernel": g_kernel,
        "grad_bias": g_bias,
        "grad_x": x.grad.numpy(),
        "grad_h0": h0.grad.numpy(),
        "grad_c0": c0.grad.numpy(),
    }
    write_safetensors(os.path.join(HERE, "lstm_golden.safetensors"), golden, meta)
    print("wrote lstm_{pytorch,keras,tensorflow,golden}.safetensors to", HERE)


if __name__ == "__main__":
    main()
