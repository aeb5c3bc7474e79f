"""A backbone of your own, as a --plugin: ``--plugin docs/examples/my_backbone.py --backbone tiny_cnn``.

One registry entry: how to build the network, how to attach the K-bit hash layer, its default image
size and learning rate (and, for a torchvision network, its ImageNet weights and input options).
"""
from torch import nn

from hyp2.models import BACKBONES


class TinyCNN(nn.Module):
    """Two conv stages and global pooling: (B, 3, S, S) -> (B, 32) features, then ``head``."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
                                      nn.MaxPool2d(2), nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(),
                                      nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Identity()

    def forward(self, x):
        return self.head(self.features(x))


def attach_hash_layer(net: TinyCNN, num_bits: int) -> nn.Module:
    net.head = nn.Linear(32, num_bits)
    return net


# No ImageNet weights: --weights is refused for it, and it trains from scratch.
BACKBONES.register("tiny_cnn", "example plugin: two conv stages, 32 px", TinyCNN, attach=attach_hash_layer,
                   image_size=32, lr=0.02, min_size=8)
