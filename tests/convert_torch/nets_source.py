"""The tiny models the PyTorch converter tests use, as source text.

The tests write this text into a module file beside the saved ``.pt`` and build the models in a
separate Python process, so the converter has to import the classes from that file exactly as it
would from an unpacked archive (the test process never imports them itself).
"""

from __future__ import annotations

NETS_SOURCE = '''
import torch
from torch import nn


class MLP(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


class SmallCNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.pool = nn.AdaptiveAvgPool2d(2)
        self.fc = nn.Linear(16, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.pool(torch.relu(self.bn(self.conv(x))))
        return torch.softmax(self.fc(y.flatten(1)), dim=1)


class TwoInTwoOut(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(4, 3)
        self.b = nn.Linear(2, 3)

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mixed = self.a(a) + self.b(b)
        return mixed, torch.sigmoid(mixed).sum(dim=1, keepdim=True)


class EmbeddingBagOfWords(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embedding = nn.Embedding(20, 8)
        self.fc = nn.Linear(8, 2)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.fc(self.embedding(ids).mean(dim=1))


class MixedInputs(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embedding = nn.Embedding(12, 3)
        self.fc = nn.Linear(3, 2)

    def forward(self, ids: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.embedding(ids).sum(dim=1) * x)


class DictHeads(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(5, 4)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        hidden = self.fc(x)
        # Not in alphabetical order: the exporters must keep insertion order, as the names do.
        return {"scale": torch.exp(hidden[:, 2:]), "mean": hidden[:, :2]}


class DataDependent(nn.Module):
    """torch.export refuses a branch on a tensor's value; the TorchScript exporter traces it."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if bool(x.abs().sum() >= 0):
            return self.fc(x)
        return -self.fc(x)


def randomize_batchnorm(model: nn.Module) -> nn.Module:
    """Non-trivial running statistics: with the defaults (0, 1) BatchNorm is nearly the identity."""
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
            module.weight.data.uniform_(0.5, 1.5)
            module.bias.data.uniform_(-0.2, 0.2)
    return model
'''
