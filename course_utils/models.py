"""Models a later chapter reuses, kept identical to the chapter that writes them (chapter 2: BasicUNet)."""

import torch
from torch import nn


class BasicUNet(nn.Module):
    """A minimal UNet: three convolutions down, three up, skips added on the way up."""

    def __init__(self, in_channels: int = 1, out_channels: int = 1):
        super().__init__()
        self.down_layers = nn.ModuleList([
            nn.Conv2d(in_channels, 32, kernel_size=5, padding=2),
            nn.Conv2d(32, 64, kernel_size=5, padding=2),
            nn.Conv2d(64, 64, kernel_size=5, padding=2),
        ])
        self.up_layers = nn.ModuleList([
            nn.Conv2d(64, 64, kernel_size=5, padding=2),
            nn.Conv2d(64, 32, kernel_size=5, padding=2),
            nn.Conv2d(32, out_channels, kernel_size=5, padding=2),
        ])
        self.act = nn.SiLU()
        self.downscale = nn.MaxPool2d(2)
        self.upscale = nn.Upsample(scale_factor=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # two halvings must come back to the same size
        if x.ndim != 4 or x.shape[-2] % 4 or x.shape[-1] % 4:
            raise ValueError("expected (B, C, H, W) with H and W divisible by 4, "
                             f"got {tuple(x.shape)}")
        skips = []
        for i, layer in enumerate(self.down_layers):
            x = self.act(layer(x))
            if i < 2:  # keep the output for the skip connection, then halve the size
                skips.append(x)
                x = self.downscale(x)
        for i, layer in enumerate(self.up_layers):
            if i > 0:  # double the resolution and add the matching skip connection
                x = self.upscale(x)
                x = x + skips.pop()
            x = self.act(layer(x))
        return x
