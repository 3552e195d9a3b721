"""Two-layer perceptron used by every transformer block and several heads."""

from __future__ import annotations

from torch import Tensor, nn


class Mlp(nn.Module):
    """``fc2(act(fc1(x)))``; state-dict keys ``fc1.*`` and ``fc2.*``."""

    def __init__(self, in_dim: int, hidden_dim: int | None = None, out_dim: int | None = None,
                 bias: bool = True) -> None:
        super().__init__()
        hidden_dim = hidden_dim or in_dim
        self.fc1 = nn.Linear(in_dim, hidden_dim, bias=bias)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden_dim, out_dim or in_dim, bias=bias)

    def forward(self, x: Tensor) -> Tensor:  # [..., in_dim] -> [..., out_dim]
        return self.fc2(self.act(self.fc1(x)))
