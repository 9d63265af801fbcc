"""The lerp corruption written in chapter 1, reused by chapter 2 (kept identical to the chapter's cell)."""

import torch


def corrupt(x: torch.Tensor, noise: torch.Tensor, amount: torch.Tensor) -> torch.Tensor:
    """Mix each image with its noise: amount 0 keeps x, amount 1 gives pure noise."""
    amount = amount.view(-1, 1, 1, 1)  # one amount per image, broadcast over C, H, W
    return x * (1 - amount) + noise * amount
