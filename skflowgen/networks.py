"""Encoders, decoders and generators: MLPs for flat rows, DCGAN-style convnets for images.

Every layer is built with :func:`torch.nn.utils.skip_init` and initialised
from an explicit :class:`torch.Generator` (torch's default scheme), so that a
fit is reproducible from ``random_state`` and torch's global RNG is never used.
"""

import math

import torch
from torch import nn
from torch.nn.utils import skip_init


def layer(cls, *args, generator=None, zero=False, **kwargs):
    """Build ``cls(*args, **kwargs)`` initialised from ``generator`` (or to zero)."""
    module = skip_init(cls, *args, **kwargs)
    if zero:
        nn.init.zeros_(module.weight)
        nn.init.zeros_(module.bias)
        return module
    nn.init.kaiming_uniform_(module.weight, a=math.sqrt(5), generator=generator)
    fan_in, _ = nn.init._calculate_fan_in_and_fan_out(module.weight)
    bound = 1 / math.sqrt(fan_in) if fan_in > 0 else 0
    nn.init.uniform_(module.bias, -bound, bound, generator=generator)
    return module


def mlp(sizes, generator, activation=nn.LeakyReLU, final_activation=None):
    """``Linear -> activation`` for each consecutive pair of ``sizes``, no activation at the end."""
    modules = []
    for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        modules.append(layer(nn.Linear, n_in, n_out, generator=generator))
        if i < len(sizes) - 2:
            modules.append(activation(0.2) if activation is nn.LeakyReLU else activation())
    if final_activation is not None:
        modules.append(final_activation)
    return nn.Sequential(*modules)


def _n_halvings(image_shape, limit=2):
    """How many stride-2 stages fit: both sides stay even, at most ``limit``."""
    _, height, width = image_shape
    k = 0
    while k < limit and height % 2 ** (k + 1) == 0 and width % 2 ** (k + 1) == 0:
        k += 1
    return k


class ConvEncoder(nn.Module):
    """DCGAN-style encoder: stride-2 4x4 convs with LeakyReLU(0.2), then a linear map to z."""

    def __init__(self, image_shape, n_components, generator, width=32):
        super().__init__()
        self.image_shape = tuple(image_shape)
        channels, height, width_px = self.image_shape
        k = _n_halvings(self.image_shape)
        modules, c_in = [], channels
        for i in range(k):
            c_out = width * 2 ** i
            modules += [layer(nn.Conv2d, c_in, c_out, 4, 2, 1, generator=generator),
                        nn.LeakyReLU(0.2)]
            c_in = c_out
        n_flat = c_in * (height >> k) * (width_px >> k)
        modules += [nn.Flatten(), layer(nn.Linear, n_flat, n_components, generator=generator)]
        self.net = nn.Sequential(*modules)

    def forward(self, x):
        return self.net(x.view(-1, *self.image_shape))


class ConvDecoder(nn.Module):
    """DCGAN-style decoder/generator: linear map to a small feature map, then
    stride-2 4x4 transposed convs with LeakyReLU(0.2); returns flat rows."""

    def __init__(self, n_components, image_shape, generator, width=32, final_activation=None):
        super().__init__()
        channels, height, width_px = image_shape
        k = _n_halvings(image_shape)
        c0 = width * 2 ** max(k - 1, 0)
        self.start_shape = (c0, height >> k, width_px >> k)
        self.project = nn.Sequential(
            layer(nn.Linear, n_components, math.prod(self.start_shape), generator=generator),
            nn.LeakyReLU(0.2))
        modules, c_in = [], c0
        for i in reversed(range(k)):
            c_out = channels if i == 0 else width * 2 ** (i - 1)
            modules.append(layer(nn.ConvTranspose2d, c_in, c_out, 4, 2, 1, generator=generator))
            if i > 0:
                modules.append(nn.LeakyReLU(0.2))
            c_in = c_out
        if k == 0:
            modules.append(layer(nn.Conv2d, c0, channels, 3, 1, 1, generator=generator))
        if final_activation is not None:
            modules.append(final_activation)
        self.net = nn.Sequential(*modules)

    def forward(self, z):
        return self.net(self.project(z).view(-1, *self.start_shape)).flatten(1)


def make_encoder(n_features, n_components, hidden_layer_sizes, image_shape, generator):
    """MLP encoder for flat rows, or :class:`ConvEncoder` when ``image_shape`` is given."""
    if image_shape is not None:
        return ConvEncoder(image_shape, n_components, generator)
    return mlp([n_features, *hidden_layer_sizes, n_components], generator)


def make_decoder(n_components, n_features, hidden_layer_sizes, image_shape, generator,
                 final_activation=None):
    """MLP decoder/generator (hidden sizes mirrored), or :class:`ConvDecoder` for images."""
    if image_shape is not None:
        return ConvDecoder(n_components, image_shape, generator,
                           final_activation=final_activation)
    return mlp([n_components, *reversed(hidden_layer_sizes), n_features], generator,
               final_activation=final_activation)


class GaussianNoise(nn.Module):
    """Observation noise ``N(x; x_hat, diag(variance))``; masked entries drop out.

    The variance is a buffer, so it moves with the device and travels in the state dict.
    """

    def __init__(self, n_features):
        super().__init__()
        self.register_buffer("variance", torch.ones(n_features))

    def log_prob(self, x, x_hat, mask=None):
        """Per-row ``log N(x; x_hat, diag(variance))`` over the observed entries."""
        terms = (x - x_hat).square() / self.variance + torch.log(2 * math.pi * self.variance)
        if mask is not None:
            terms = terms * mask
        return -0.5 * terms.sum(dim=1)
