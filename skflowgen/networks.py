"""Encoders, decoders and generators: MLPs for flat rows, DCGAN-style convnets for images.

Every layer is built with :func:`torch.nn.utils.skip_init` and initialised
from an explicit :class:`torch.Generator` (torch's default scheme), so that a
fit is reproducible from ``random_state`` and torch's global RNG is never used.
"""

import math

import torch
from torch import nn
from torch.nn.utils import skip_init


def layer(cls, *args, generator=None, **kwargs):
    """Build ``cls(*args, **kwargs)`` initialised from ``generator`` (torch's default scheme)."""
    module = skip_init(cls, *args, **kwargs)
    nn.init.kaiming_uniform_(module.weight, a=math.sqrt(5), generator=generator)
    fan_in, _ = nn.init._calculate_fan_in_and_fan_out(module.weight)
    bound = 1 / math.sqrt(fan_in) if fan_in > 0 else 0
    nn.init.uniform_(module.bias, -bound, bound, generator=generator)
    return module


def member_matmul(x, weight, batched, bias=None):
    """``x @ weight[m].T (+ bias[m])`` for each member m: ``x`` (n, a) shared by the members
    or (n_members, n, a), ``weight`` (n_members, b, a) (:class:`torch.nn.Linear`'s layout),
    ``bias`` (n_members, 1, b) or None; result (n_members, n, b). The bias is added inside the
    product (``addmm``): a separate addition, a second pass over the output, measured 3 times
    slower on 4,096 rows of width 64 on a CPU core.

    Shared rows take one product with all members' weights side by side. Otherwise
    ``batched`` takes one batched product (training), else one plain product per member
    (evaluation): batched products round differently with the number of rows for some
    shapes (measured: 5 -> 4 and 16 -> 1 features), plain ones do not, so that a row's
    score never depends on the other rows of a call.
    """
    members, n_out, n_in = weight.shape

    def product(rows, w, b):  # rows @ w (+ b)
        return rows @ w if bias is None else torch.addmm(b, rows, w)
    if members == 1:
        return product(x.reshape(-1, n_in), weight[0].T, None if bias is None else bias[0])[None]
    if x.dim() == 2:
        out = product(x, weight.reshape(members * n_out, n_in).T,
                      None if bias is None else bias.reshape(1, -1))
        return out.view(len(x), members, n_out).transpose(0, 1)
    if batched:
        return torch.bmm(x, weight.mT) if bias is None else torch.baddbmm(bias, x, weight.mT)
    return torch.stack([product(x[m], weight[m].T, None if bias is None else bias[m])
                        for m in range(members)])


def member_mean(x):
    """Mean over the leading member dimension of ``x``, adding the members one by one:
    ``torch.mean`` over a leading dimension of 5 or more sums in an order that depends on
    the size of the others (measured), so a row's mean would depend on its batch."""
    total = x[0]
    for member in x[1:]:
        total = total + member
    return total / len(x)


class Linear(nn.Module):
    """``n_members`` independent affine maps applied at once: ``x W_m^T + b_m``.

    ``x`` is (n, n_in), shared by every member, or (n_members, n, n_in); the output is
    (n_members, n, n_out). Weights start as :class:`torch.nn.Linear`'s (uniform within
    ``1 / sqrt(n_in)``), or at zero.
    """

    def __init__(self, n_members, n_in, n_out, generator=None, zero=False):
        super().__init__()
        weight, bias = torch.zeros(n_members, n_out, n_in), torch.zeros(n_members, 1, n_out)
        if not zero:
            bound = 1 / math.sqrt(n_in)
            weight.uniform_(-bound, bound, generator=generator)
            bias.uniform_(-bound, bound, generator=generator)
        self.weight, self.bias = nn.Parameter(weight), nn.Parameter(bias)

    def forward(self, x):
        return member_matmul(x, self.weight, self.training, self.bias)


def mlp(n_members, sizes, generator, activation=nn.LeakyReLU, final_activation=None):
    """``Linear -> activation`` for each consecutive pair of ``sizes``, no activation at the
    end; ``n_members`` independent networks evaluated together."""
    modules = []
    for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        modules.append(Linear(n_members, n_in, n_out, generator=generator))
        if i < len(sizes) - 2:
            modules.append(activation(0.2) if activation is nn.LeakyReLU else activation())
    if final_activation is not None:
        modules.append(final_activation)
    return nn.Sequential(*modules)


class Members(nn.Module):
    """``n_members`` copies of a network that has no member dimension of its own (the
    convnets), run one after the other and stacked: ``(n_members, n, ...)``. Rows (n, p)
    are shared by the members; latents (n_members, n, d) are split among them."""

    def __init__(self, networks):
        super().__init__()
        self.networks = nn.ModuleList(networks)

    def forward(self, x, method="forward"):
        return torch.stack([getattr(net, method)(x if x.dim() == 2 else x[m])
                            for m, net in enumerate(self.networks)])


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

    def feature_maps(self, x):
        """The last feature maps (after the last convolution and its activation), flat:
        (n, channels x height x width)."""
        return self.net[:-2](x.view(-1, *self.image_shape)).flatten(1)

    def features(self, x):
        """Each channel of the last feature maps summarised over space by its mean, maximum
        and standard deviation: (n, 3 x channels)."""
        h = self.net[:-2](x.view(-1, *self.image_shape))
        return torch.cat([h.mean(dim=(2, 3)), h.amax(dim=(2, 3)),
                          h.std(dim=(2, 3), correction=0)], dim=1)


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


def make_encoder(n_members, n_features, n_components, hidden_layer_sizes, image_shape,
                 generator):
    """MLP encoder for flat rows, or :class:`ConvEncoder` when ``image_shape`` is given;
    rows (n, n_features) in, latents (n_members, n, n_components) out."""
    if image_shape is not None:
        return Members([ConvEncoder(image_shape, n_components, generator)
                        for _ in range(n_members)])
    return mlp(n_members, [n_features, *hidden_layer_sizes, n_components], generator)


def hidden_features(encoder, x, maps=False):
    """What the encoder of :func:`make_encoder` sees in rows ``x`` (shared (n, p), or each
    member's own (n_members, n, p)) before its last linear map: its last hidden layer, or
    :meth:`ConvEncoder.features` (``maps``: :meth:`ConvEncoder.feature_maps`); (n_members,
    n, h)."""
    if isinstance(encoder, Members):
        return encoder(x, method="feature_maps" if maps else "features")
    h = encoder[:-1](x)
    return h if h.dim() == 3 else h.expand(encoder[-1].weight.shape[0], -1, -1)


def make_decoder(n_members, n_components, n_features, hidden_layer_sizes, image_shape,
                 generator, final_activation=None):
    """MLP decoder/generator (hidden sizes mirrored), or :class:`ConvDecoder` for images;
    latents (n_members, n, n_components) in, rows (n_members, n, n_features) out."""
    if image_shape is not None:
        return Members([ConvDecoder(n_components, image_shape, generator,
                                    final_activation=final_activation)
                        for _ in range(n_members)])
    return mlp(n_members, [n_components, *reversed(hidden_layer_sizes), n_features], generator,
               final_activation=final_activation)


class GaussianNoise(nn.Module):
    """Observation noise ``N(x; x_hat, diag(variance))`` of each member; masked entries drop
    out.

    The variance, of shape (n_members, 1, n_features), is a buffer, so it moves with the
    device and travels in the state dict.
    """

    def __init__(self, n_members, n_features):
        super().__init__()
        self.register_buffer("variance", torch.ones(n_members, 1, n_features))

    def log_prob(self, x, x_hat, mask=None):
        """``log N(x; x_hat, diag(variance))`` over the observed entries: ``x`` (n, p),
        ``x_hat`` (n_members, n, p), result (n_members, n)."""
        terms = (x - x_hat).square() / self.variance + torch.log(2 * math.pi * self.variance)
        if mask is not None:
            terms = terms * mask
        return -0.5 * terms.sum(dim=-1)
