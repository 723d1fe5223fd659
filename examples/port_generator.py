"""Port a DCGAN-style PyTorch generator to Flax with jtconv and show both agree end to end.

The torch generator is the classic DCGAN stack: ConvTranspose2d → BatchNorm2d
(eval mode) → ReLU, four times, then ConvTranspose2d → Tanh, growing a latent
vector into a 64×64 RGB image. The Flax port uses ``jtconv.linen.ConvTranspose``
(channels-last, Flax's convention) and ``flax.linen.BatchNorm``;
``jtconv.state_dict.torch_to_flax`` converts the state dict (ConvTranspose
weights copy across unchanged: jtconv stores kernels in torch's layout). Run::

    python examples/port_generator.py [--batch 4] [--nz 64] [--ngf 32]
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import torch

from jtconv.linen import ConvTranspose
from jtconv.state_dict import torch_layer_kinds, torch_to_flax


def torch_generator(nz: int, ngf: int, channels: int = 3) -> torch.nn.Sequential:
    """DCGAN generator: (N, nz, 1, 1) → (N, channels, 64, 64)."""
    widths = [nz, ngf * 8, ngf * 4, ngf * 2, ngf]
    layers: list[torch.nn.Module] = []
    for i, (cin, cout) in enumerate(zip(widths[:-1], widths[1:])):
        stride, padding = (1, 0) if i == 0 else (2, 1)
        layers += [
            torch.nn.ConvTranspose2d(cin, cout, 4, stride, padding, bias=False),
            torch.nn.BatchNorm2d(cout),
            torch.nn.ReLU(),
        ]
    layers += [torch.nn.ConvTranspose2d(ngf, channels, 4, 2, 1, bias=False), torch.nn.Tanh()]
    return torch.nn.Sequential(*layers)


def randomize_batch_norm(model: torch.nn.Module, generator: torch.Generator) -> None:
    """Give every BatchNorm non-trivial statistics and affine parameters, as a trained model has."""
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                n = module.num_features
                module.running_mean.copy_(0.1 * torch.randn(n, generator=generator))
                module.running_var.copy_(0.5 + torch.rand(n, generator=generator))
                module.weight.copy_(1 + 0.1 * torch.randn(n, generator=generator))
                module.bias.copy_(0.1 * torch.randn(n, generator=generator))


class Generator(nn.Module):
    """The same generator in Flax: channels-last ``(N, 1, 1, nz) → (N, 64, 64, channels)``."""

    widths: Sequence[int]  # ngf·8, ngf·4, ngf·2, ngf, channels

    @nn.compact
    def __call__(self, z: jax.Array) -> jax.Array:
        x = z
        for i, features in enumerate(self.widths[:-1]):
            stride, padding = (1, 0) if i == 0 else (2, 1)
            x = ConvTranspose(features, (4, 4), strides=stride, padding=padding, use_bias=False, name=f"up{i}")(x)
            x = nn.BatchNorm(use_running_average=True, epsilon=1e-5, name=f"bn{i}")(x)
            x = nn.relu(x)
        x = ConvTranspose(
            self.widths[-1], (4, 4), strides=2, padding=1, use_bias=False, name=f"up{len(self.widths) - 1}"
        )(x)
        return jnp.tanh(x)


def port_variables(model: torch.nn.Sequential) -> dict:
    """Flax variables of :class:`Generator` from the torch generator's state dict."""
    kinds = torch_layer_kinds(model)  # {"0": "conv_transpose", "1": "batch_norm", ...}
    names = {}
    for kind, prefix in (("conv_transpose", "up"), ("batch_norm", "bn")):
        names.update({name: f"{prefix}{i}" for i, name in enumerate(n for n, k in kinds.items() if k == kind)})
    return torch_to_flax(model.state_dict(), names.get, kinds=kinds).variables


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--nz", type=int, default=64, help="latent size")
    parser.add_argument("--ngf", type=int, default=32, help="generator width")
    args = parser.parse_args(argv)

    generator = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    model = torch_generator(args.nz, args.ngf).eval()
    randomize_batch_norm(model, generator)
    z = torch.randn(args.batch, args.nz, 1, 1, generator=generator)
    with torch.no_grad():
        y_torch = model(z).numpy()

    flax_model = Generator(widths=(args.ngf * 8, args.ngf * 4, args.ngf * 2, args.ngf, 3))
    variables = port_variables(model)
    z_flax = jnp.asarray(z.numpy()).transpose(0, 2, 3, 1)  # NCHW → NHWC
    y_flax = np.asarray(jax.jit(flax_model.apply)(variables, z_flax)).transpose(0, 3, 1, 2)  # back to NCHW

    n_params = sum(p.numel() for p in model.parameters())
    n_layers = list(torch_layer_kinds(model).values()).count("conv_transpose")
    print(f"torch generator: {n_layers} ConvTranspose2d layers, {n_params:,} parameters")
    print(f"latent {tuple(z.shape)} -> image {y_torch.shape} (torch) / {y_flax.shape} (Flax + jtconv)")
    difference = float(np.abs(y_flax - y_torch).max())
    tolerance = 1e-5 * float(np.abs(y_torch).max())
    print(f"max |flax - torch| = {difference:.2e}  (float32 tolerance 1e-5 * max|y| = {tolerance:.2e})")
    equal = y_flax.shape == y_torch.shape and difference <= tolerance
    print("equal end to end:", equal)
    return 0 if equal else 1


if __name__ == "__main__":
    raise SystemExit(main())
