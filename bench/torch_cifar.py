"""PyTorch's training throughput for the CIFAR CNN of examples/cifar (bench/cifar.sh):
images/s of forward + backward + SGD momentum at the same batch sizes."""

import argparse
import time

import torch
import torch.nn.functional as F
from torch import nn


class Net(nn.Module):
    def __init__(self, l1=120, l2=84):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 6, 5)
        self.pool = nn.MaxPool2d(2, 2)
        self.conv2 = nn.Conv2d(6, 16, 5)
        self.fc1 = nn.Linear(16 * 5 * 5, l1)
        self.fc2 = nn.Linear(l1, l2)
        self.fc3 = nn.Linear(l2, 10)

    def forward(self, x):
        x = self.pool(F.relu(self.conv1(x)))
        x = self.pool(F.relu(self.conv2(x)))
        x = torch.flatten(x, 1)
        x = F.relu(self.fc1(x))
        x = F.relu(self.fc2(x))
        return self.fc3(x)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--batch-sizes", default="4,16,128")
    p.add_argument("--seconds", type=float, default=5.0)
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--gpu", action="store_true")
    a = p.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    dev = torch.device("cuda" if a.gpu else "cpu")
    for b in [int(x) for x in a.batch_sizes.split(",")]:
        torch.manual_seed(0)
        net = Net().to(dev)
        opt = torch.optim.SGD(net.parameters(), lr=0.001, momentum=0.9)
        loss_fn = nn.CrossEntropyLoss()
        x = torch.randn(b, 3, 32, 32, device=dev)
        y = torch.randint(0, 10, (b,), device=dev)

        def steps(n, net=net, opt=opt, loss_fn=loss_fn, x=x, y=y):
            for _ in range(n):
                opt.zero_grad()
                loss = loss_fn(net(x), y)
                loss.backward()
                opt.step()
            if a.gpu:
                torch.cuda.synchronize()

        steps(20)
        t = time.perf_counter()
        n = 0
        while time.perf_counter() - t < a.seconds:
            steps(10)
            n += 10
        ips = n * b / (time.perf_counter() - t)
        where = "GPU" if a.gpu else f"{torch.get_num_threads()} threads"
        print(f"torch batch {b:>4}: {ips:>9.0f} images/s ({where})", flush=True)


if __name__ == "__main__":
    main()
