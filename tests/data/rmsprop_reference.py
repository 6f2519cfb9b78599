#!/usr/bin/env python3
"""Reference values for tests/test_rmsprop.cpp.

Three RMSProp steps on a two-element parameter with fixed gradients, for each
configuration the tests cover. The TensorFlow 1.x variant is computed with plain
Python floats from the update written in TensorFlow's ApplyRMSProp and
ApplyCenteredRMSProp kernels. The PyTorch variant is run through
torch.optim.RMSprop itself (Debian's python3-torch, in double precision).

Run with the system interpreter and paste the output into the test:
    /usr/bin/python3 tests/data/rmsprop_reference.py
"""
import math

import torch

THETA0 = [1.0, -2.0]
GRADS = [[0.5, -1.0], [-0.25, 2.0], [1.0, 0.1]]
LR = 0.1


def tensorflow(decay, momentum, epsilon, centered):
    theta = list(THETA0)
    ms = [1.0, 1.0]
    mg = [0.0, 0.0]
    mom = [0.0, 0.0]
    out = []
    for g in GRADS:
        for k in range(2):
            ms[k] = decay * ms[k] + (1 - decay) * g[k] * g[k]
            if centered:
                mg[k] = decay * mg[k] + (1 - decay) * g[k]
                denom = ms[k] - mg[k] * mg[k] + epsilon
            else:
                denom = ms[k] + epsilon
            mom[k] = momentum * mom[k] + LR * g[k] / math.sqrt(denom)
            theta[k] -= mom[k]
        out.append(list(theta))
    return out


def pytorch(alpha, momentum, eps, centered):
    p = torch.tensor(THETA0, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.RMSprop([p], lr=LR, alpha=alpha, eps=eps, momentum=momentum, centered=centered)
    out = []
    for g in GRADS:
        p.grad = torch.tensor(g, dtype=torch.float64)
        opt.step()
        out.append(p.detach().tolist())
    return out


CASES = [
    ("tf_plain", tensorflow(0.9, 0.0, 1e-10, False)),
    ("tf_momentum", tensorflow(0.9, 0.5, 1e-10, False)),
    ("tf_centered", tensorflow(0.9, 0.0, 1e-10, True)),
    ("tf_centered_momentum", tensorflow(0.9, 0.5, 1e-10, True)),
    ("torch_plain", pytorch(0.99, 0.0, 1e-8, False)),
    ("torch_momentum", pytorch(0.99, 0.9, 1e-8, False)),
    ("torch_centered", pytorch(0.99, 0.0, 1e-8, True)),
    ("torch_centered_momentum", pytorch(0.99, 0.9, 1e-8, True)),
]

for name, steps in CASES:
    rows = ", ".join("{%r, %r}" % (a, b) for a, b in steps)
    print("// %s\n{%s}," % (name, rows))
