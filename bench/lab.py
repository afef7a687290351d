"""The lab's script, as a process of its own: torchvision MNIST + ToTensor + DataLoader, the lab's model and loop.

`bench/trial.py` times this whole process (start-up, data, 10 epochs, test accuracy) against
`python sweep/run.py`; `bench/speed.py` drives `lab_phases` epoch by epoch. Only torch and torchvision
are imported, as in the lab.

    .venv/bin/python bench/lab.py --epochs 10
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

SEED = 777  # the lab's seed
BATCH = 100
LR = 1e-3
DROP = 0.3  # the lab's keep_prob = 0.7


def lab_phases(args, device):
    """The lab script's training loop, kept as it was (only the test-time pixel scaling is fixed).

    A generator of phases: yields after the data loading, after each epoch, and once more with the test accuracy,
    so the driver can time each epoch and interleave the variants.
    """
    import random

    import torch
    import torchvision.datasets as dsets
    import torchvision.transforms as transforms

    random.seed(SEED)
    torch.manual_seed(SEED)
    if device.type == "cuda":
        torch.cuda.manual_seed_all(SEED)

    t0 = time.perf_counter()
    mnist_train = dsets.MNIST(root=str(args.root), train=True, transform=transforms.ToTensor(), download=False)
    mnist_test = dsets.MNIST(root=str(args.root), train=False, transform=transforms.ToTensor(), download=False)
    data_loader = torch.utils.data.DataLoader(dataset=mnist_train, batch_size=BATCH, shuffle=True, drop_last=True)
    setup_s = time.perf_counter() - t0

    linear1 = torch.nn.Linear(784, 512, bias=True)
    linear2 = torch.nn.Linear(512, 512, bias=True)
    linear3 = torch.nn.Linear(512, 512, bias=True)
    linear4 = torch.nn.Linear(512, 512, bias=True)
    linear5 = torch.nn.Linear(512, 10, bias=True)
    relu = torch.nn.ReLU()
    dropout = torch.nn.Dropout(p=DROP)
    for lin in (linear1, linear2, linear3, linear4, linear5):
        torch.nn.init.xavier_uniform_(lin.weight)
    model = torch.nn.Sequential(
        linear1, relu, dropout, linear2, relu, dropout, linear3, relu, dropout, linear4, relu, dropout, linear5
    ).to(device)
    criterion = torch.nn.CrossEntropyLoss().to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=LR)
    yield {"setup_s": setup_s}

    total_batch = len(data_loader)
    model.train()
    for epoch in range(args.epochs):
        avg_cost = 0
        for X, Y in data_loader:
            X = X.view(-1, 28 * 28).to(device)
            Y = Y.to(device)
            optimizer.zero_grad()
            hypothesis = model(X)
            cost = criterion(hypothesis, Y)
            cost.backward()
            optimizer.step()
            avg_cost += cost / total_batch  # a tensor (with its autograd chain), as in the lab
        line = "Epoch: {} cost = {:.9f}".format("%04d" % (epoch + 1), avg_cost)  # the lab's print: a sync
        yield {"fit_loss": float(avg_cost.detach()), "log": line}

    with torch.no_grad():  # the lab's test pass (untimed), with the pixels scaled like the training inputs
        model.eval()
        X_test = (mnist_test.data.view(-1, 28 * 28).float() / 255.0).to(device)
        Y_test = mnist_test.targets.to(device)
        prediction = model(X_test)
        accuracy = (torch.argmax(prediction, 1) == Y_test).float().mean().item()
    yield {"test_acc": accuracy}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--epochs", type=int, default=15, help="the lab ran 15")
    p.add_argument(
        "--root",
        default=str(Path(__file__).resolve().parents[1] / "data" / "files"),
        help="dataset root holding MNIST/raw/*-ubyte (default: <project>/data/files)",
    )
    args = p.parse_args(argv)
    import torch

    t0 = time.perf_counter()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    for phase in lab_phases(args, device):
        if "log" in phase:
            print(phase["log"], flush=True)
        if "test_acc" in phase:
            print(f"Accuracy: {phase['test_acc']:.4f}  ({time.perf_counter() - t0:.1f} s after import torch)")


if __name__ == "__main__":
    main()
