#!/usr/bin/env python3
"""The count-ones example's default training run in PyTorch, for a whole-run comparison.

The same model, data and training as examples/count_ones with its defaults:
Embedding(2, 2) -> LSTM(2, 64) -> each row's last valid output -> Linear(64, 15), mean
softmax cross-entropy on the logits, RMSProp with lr 0.01, decay 0.9; 1000 steps of 50
sequences of random bits, lengths uniform in [3, 15), padded to the longest of the batch;
then accuracy on 1000 held-out sequences. The ragged batch goes through
pack_padded_sequence, so PyTorch skips the padding as dynrnn does; h_n is each row's last
valid output.

The optimiser is TensorFlow 1.x's RMSProp, as in dynrnn's default, written with torch
tensor ops (mean square from 1, epsilon 1e-10 inside the root). torch.optim.RMSprop
(square average from 0, epsilon outside) is available with --torch-rmsprop; it takes
about as long.

Usage (Debian's python3-torch belongs to the system interpreter):
    /usr/bin/python3 benchmarks/peers/pytorch_count_ones.py [--threads 1] [--steps 1000]
Compare with the same thread count:
    OMP_NUM_THREADS=1 build/examples/count_ones/count_ones --checkpoint-every 0
"""
import argparse
import time

import torch

CLASSES = 15
MIN_LENGTH, MAX_LENGTH = 3, 15


def make_batch(batch, generator):
    lengths = torch.randint(MIN_LENGTH, MAX_LENGTH, (batch,), generator=generator)
    max_time = int(lengths.max())
    bits = torch.randint(0, 2, (max_time, batch), generator=generator)
    valid = torch.arange(max_time).unsqueeze(1) < lengths.unsqueeze(0)
    ids = bits * valid
    return ids, lengths, ids.sum(0)


class Model(torch.nn.Module):
    def __init__(self, hidden):
        super().__init__()
        self.embedding = torch.nn.Embedding(2, 2)
        self.lstm = torch.nn.LSTM(2, hidden)
        self.output = torch.nn.Linear(hidden, CLASSES)

    def forward(self, ids, lengths):
        packed = torch.nn.utils.rnn.pack_padded_sequence(self.embedding(ids), lengths, enforce_sorted=False)
        _, (h_n, _) = self.lstm(packed)
        return self.output(h_n[0])


class TensorFlowRMSProp:
    """tf.compat.v1.train.RMSPropOptimizer without momentum: ms from 1, eps inside the root."""

    def __init__(self, params, lr, decay=0.9, eps=1e-10):
        self.params, self.lr, self.decay, self.eps = list(params), lr, decay, eps
        self.ms = [torch.ones_like(p) for p in self.params]

    def zero_grad(self):
        for p in self.params:
            p.grad = None

    @torch.no_grad()
    def step(self):
        for p, ms in zip(self.params, self.ms):
            ms.mul_(self.decay).addcmul_(p.grad, p.grad, value=1 - self.decay)
            p.addcdiv_(p.grad, (ms + self.eps).sqrt_(), value=-self.lr)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--batch", type=int, default=50)
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--lr", type=float, default=0.01)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--torch-rmsprop", action="store_true", help="torch.optim.RMSprop instead")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    generator = torch.Generator().manual_seed(args.seed)
    model = Model(args.hidden)
    if args.torch_rmsprop:
        opt = torch.optim.RMSprop(model.parameters(), lr=args.lr, alpha=0.9, eps=1e-10)
    else:
        opt = TensorFlowRMSProp(model.parameters(), lr=args.lr)
    loss_fn = torch.nn.CrossEntropyLoss()

    start = time.perf_counter()
    for step in range(1, args.steps + 1):
        ids, lengths, targets = make_batch(args.batch, generator)
        loss = loss_fn(model(ids, lengths), targets)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 200 == 0:
            print(f"step {step:5d}  loss {loss.item():9.4f}", flush=True)
    seconds = time.perf_counter() - start

    with torch.no_grad():
        ids, lengths, targets = make_batch(1000, generator)
        accuracy = (model(ids, lengths).argmax(1) == targets).float().mean().item()
    print(f"trained {args.steps} steps in {seconds:.2f} s ({args.threads} thread(s)); "
          f"held-out accuracy: {accuracy:.4f}")


if __name__ == "__main__":
    main()
