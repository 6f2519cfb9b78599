#!/usr/bin/env python3
"""Golden values for tests/test_optimizers.cpp, written to optimizer_golden.json.

Five updates of a 2x3 parameter under a fixed gradient sequence, in double, for every
optimiser and option the tests cover, and clip_grad_norm_ on several tensors.

- PyTorch's semantics (Adam, AdamW, SGD, Adagrad, RMSprop, clip_grad_norm_) come from
  torch.optim and torch.nn.utils themselves (Debian's python3-torch).
- TensorFlow 1.x's Adam ("epsilon hat") and the learning-rate schedules are computed here
  by hand with Python floats, from the updates that TensorFlow documents
  (tf.compat.v1.train.AdamOptimizer, exponential_decay, cosine_decay), since TensorFlow is
  not packaged in Debian. StepLR is checked against torch.optim.lr_scheduler.StepLR.

Run with the system interpreter:
    /usr/bin/python3 tests/data/make_optimizer_golden.py
"""
import json
import math
import os

import torch

THETA0 = [[0.5, -1.0, 2.0], [0.0, 0.25, -0.75]]
GRADS = [
    [[0.1, -0.2, 0.3], [0.0, 1.5, -0.4]],
    [[-0.3, 0.1, 0.05], [0.2, -1.0, 0.4]],
    [[0.2, 0.0, -0.6], [0.0, 0.5, 0.1]],
    [[1.0, -0.5, 0.2], [-0.1, 0.25, -0.3]],
    [[-0.05, 0.3, 0.0], [0.6, -0.2, 0.2]],
]
LR = 0.1


def run_torch(make):
    p = torch.tensor(THETA0, dtype=torch.float64, requires_grad=True)
    opt = make([p])
    out = []
    for g in GRADS:
        p.grad = torch.tensor(g, dtype=torch.float64)
        opt.step()
        out.append(p.detach().tolist())
    return out


def tf_adam(lr, beta1, beta2, eps, amsgrad):
    """tf.compat.v1.train.AdamOptimizer (ApplyAdam), Keras' vhat for amsgrad."""
    theta = [row[:] for row in THETA0]
    m = [[0.0] * 3 for _ in range(2)]
    v = [[0.0] * 3 for _ in range(2)]
    vhat = [[0.0] * 3 for _ in range(2)]
    out = []
    for t, g in enumerate(GRADS, start=1):
        alpha = lr * math.sqrt(1 - beta2 ** t) / (1 - beta1 ** t)
        for i in range(2):
            for j in range(3):
                m[i][j] += (g[i][j] - m[i][j]) * (1 - beta1)
                v[i][j] += (g[i][j] * g[i][j] - v[i][j]) * (1 - beta2)
                second = v[i][j]
                if amsgrad:
                    vhat[i][j] = max(vhat[i][j], v[i][j])
                    second = vhat[i][j]
                theta[i][j] -= (m[i][j] * alpha) / (math.sqrt(second) + eps)
        out.append([row[:] for row in theta])
    return out


cases = []


def case(name, optimizer, options, expected):
    cases.append({"name": name, "optimizer": optimizer, "options": options, "expected": expected})


for amsgrad in (False, True):
    for wd in (0.0, 0.1):
        suffix = ("_amsgrad" if amsgrad else "") + ("_wd" if wd else "")
        case("adam" + suffix, "adam", {"lr": LR, "beta1": 0.9, "beta2": 0.999, "eps": 1e-8,
                                       "weight_decay": wd, "amsgrad": amsgrad},
             run_torch(lambda ps: torch.optim.Adam(ps, lr=LR, weight_decay=wd, amsgrad=amsgrad)))
        case("adamw" + suffix, "adamw", {"lr": LR, "beta1": 0.9, "beta2": 0.999, "eps": 1e-8,
                                         "weight_decay": wd, "amsgrad": amsgrad},
             run_torch(lambda ps: torch.optim.AdamW(ps, lr=LR, weight_decay=wd, amsgrad=amsgrad)))
    case("adam_tf" + ("_amsgrad" if amsgrad else ""), "adam_tf",
         {"lr": LR, "beta1": 0.9, "beta2": 0.999, "eps": 1e-8, "weight_decay": 0.0, "amsgrad": amsgrad},
         tf_adam(LR, 0.9, 0.999, 1e-8, amsgrad))
case("adam_betas", "adam", {"lr": LR, "beta1": 0.5, "beta2": 0.9, "eps": 1e-3, "weight_decay": 0.0,
                            "amsgrad": False},
     run_torch(lambda ps: torch.optim.Adam(ps, lr=LR, betas=(0.5, 0.9), eps=1e-3)))

for momentum, dampening, nesterov, wd, name in [
        (0.0, 0.0, False, 0.0, "sgd"),
        (0.9, 0.0, False, 0.0, "sgd_momentum"),
        (0.9, 0.3, False, 0.0, "sgd_dampening"),
        (0.9, 0.0, True, 0.0, "sgd_nesterov"),
        (0.0, 0.0, False, 0.05, "sgd_wd"),
        (0.9, 0.0, True, 0.05, "sgd_nesterov_wd")]:
    case(name, "sgd", {"lr": LR, "momentum": momentum, "dampening": dampening, "nesterov": nesterov,
                       "weight_decay": wd},
         run_torch(lambda ps: torch.optim.SGD(ps, lr=LR, momentum=momentum, dampening=dampening,
                                              nesterov=nesterov, weight_decay=wd)))

for lr_decay, wd, init, eps, name in [
        (0.0, 0.0, 0.0, 1e-10, "adagrad"),
        (0.1, 0.0, 0.0, 1e-10, "adagrad_lr_decay"),
        (0.0, 0.05, 0.0, 1e-10, "adagrad_wd"),
        (0.0, 0.0, 0.1, 0.0, "adagrad_tf")]:
    case(name, "adagrad", {"lr": LR, "lr_decay": lr_decay, "weight_decay": wd,
                           "initial_accumulator_value": init, "eps": eps},
         run_torch(lambda ps: torch.optim.Adagrad(ps, lr=LR, lr_decay=lr_decay, weight_decay=wd,
                                                  initial_accumulator_value=init, eps=eps)))

for momentum, centered, name in [(0.0, False, "rmsprop_torch"), (0.9, True, "rmsprop_torch_centered_momentum")]:
    case(name, "rmsprop_torch", {"lr": LR, "alpha": 0.99, "eps": 1e-8, "momentum": momentum,
                                 "centered": centered},
         run_torch(lambda ps: torch.optim.RMSprop(ps, lr=LR, alpha=0.99, eps=1e-8, momentum=momentum,
                                                  centered=centered)))

# clip_grad_norm_ on three tensors of different shapes.
CLIP_TENSORS = [[[3.0, -4.0], [1.0, 2.0]], [0.5, -1.5, 2.5], [[0.25], [-0.75], [1.0]]]
clips = []
for max_norm in (1.0, 5.0, 100.0):
    ts = [torch.tensor(t, dtype=torch.float64) for t in CLIP_TENSORS]
    ps = []
    for t in ts:
        p = torch.zeros_like(t, requires_grad=True)
        p.grad = t.clone()
        ps.append(p)
    norm = torch.nn.utils.clip_grad_norm_(ps, max_norm)
    clips.append({"max_norm": max_norm, "norm": float(norm), "clipped": [p.grad.tolist() for p in ps]})

# Schedules at steps 0..39.
STEPS = list(range(40))


def step_lr():
    p = torch.zeros(1, requires_grad=True)
    opt = torch.optim.SGD([p], lr=0.5)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=7, gamma=0.3)
    out = []
    for _ in STEPS:
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return out


def exponential(initial, decay_steps, rate, staircase):
    out = []
    for t in STEPS:
        p = t / decay_steps
        if staircase:
            p = math.floor(p)
        out.append(initial * rate ** p)
    return out


def cosine(initial, decay_steps, alpha):
    out = []
    for t in STEPS:
        c = 0.5 * (1 + math.cos(math.pi * min(t, decay_steps) / decay_steps))
        out.append(initial * ((1 - alpha) * c + alpha))
    return out


def warmup(w, inner):
    return [inner[0] * (t + 1) / w if t < w else inner[t - w] for t in STEPS]


schedules = {
    "step_decay": step_lr(),
    "exponential": exponential(0.5, 10, 0.8, False),
    "exponential_staircase": exponential(0.5, 10, 0.8, True),
    "cosine": cosine(0.5, 25, 0.1),
    "warmup_cosine": warmup(5, cosine(0.5, 25, 0.1)),
}

doc = {
    "note": "written by tests/data/make_optimizer_golden.py with torch " + torch.__version__,
    "theta0": THETA0,
    "grads": GRADS,
    "cases": cases,
    "clip_tensors": CLIP_TENSORS,
    "clips": clips,
    "schedules": schedules,
}
path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "optimizer_golden.json")
with open(path, "w") as f:
    json.dump(doc, f, indent=1)
    f.write("\n")
print("wrote", path, "with", len(cases), "optimizer cases")
