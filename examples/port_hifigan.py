"""Port a HiFi-GAN generator from a safetensors checkpoint to Flax, and show it equals torch end to end.

The torch side is HiFi-GAN's generator as its reference implementation
writes it: a weight-normed ``Conv1d``, then per stage a leaky ReLU, a
weight-normed ``ConvTranspose1d`` (the upsampler, kernel ``k``, stride ``u``,
padding ``(k − u) / 2``) and the mean of residual blocks of dilated,
weight-normed ``Conv1d`` pairs; a last ``Conv1d`` and ``tanh``. Its weights
are set with ``load_state_dict`` (as when loading a trained checkpoint, which
leaves the old-style weight-norm hooks' ``module.weight`` stale) and saved as
safetensors.

The JAX side never imports torch: it reads the safetensors file, converts it
with :func:`jtconv.state_dict.torch_to_flax` (``g · v / ‖v‖`` for every
weight-normed layer, Conv ``(out, in, k) → (k, in, out)``, ConvTranspose
unchanged) into a linen model written with ``flax.linen.Conv`` and
``jtconv.linen.ConvTranspose`` whose layer names follow linen's list naming
(``resblocks.3.convs1.2`` → ``resblocks_3/convs1_2``), and runs it. Then the
Flax variables go back into a fresh weight-normed torch model with
:func:`jtconv.state_dict.flax_to_torch`. Run::

    python examples/port_hifigan.py [--batch 2] [--frames 16] [--channels 64] [--checkpoint FILE]
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import tempfile
from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jtconv.interop import load_state_dict
from jtconv.linen import ConvTranspose
from jtconv.state_dict import flax_to_torch, linen_path, torch_to_flax
from jtconv.testing import relative_tolerance

LRELU_SLOPE = 0.1


@dataclasses.dataclass(frozen=True)
class Config:
    """HiFi-GAN's hyperparameters (V1 uses 80 mels, 512 channels, rates 8, 8, 2, 2)."""

    mels: int = 16
    initial_channels: int = 64
    upsample_rates: tuple[int, ...] = (4, 4, 2)
    upsample_kernels: tuple[int, ...] = (8, 8, 4)
    resblock_kernels: tuple[int, ...] = (3, 7)
    resblock_dilations: tuple[tuple[int, ...], ...] = ((1, 3, 5), (1, 3, 5))

    def stage_channels(self, stage: int) -> int:
        return self.initial_channels // 2 ** (stage + 1)


def get_padding(kernel_size: int, dilation: int) -> int:
    """'Same' padding of a stride-1 dilated convolution (HiFi-GAN's ``get_padding``)."""
    return (kernel_size * dilation - dilation) // 2


# --- torch side: the reference implementation and its checkpoint --------------------------------


def torch_generator(config: Config):
    """HiFi-GAN's ``Generator`` with ``ResBlock1``, weight-normed with the old hook API, as published."""
    import warnings

    import torch
    import torch.nn.functional as F
    from torch import nn as tnn

    def weight_norm(module):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # the hook API is deprecated; checkpoints still use it
            return tnn.utils.weight_norm(module)

    class ResBlock1(tnn.Module):
        def __init__(self, channels, kernel_size, dilations):
            super().__init__()
            self.convs1 = tnn.ModuleList(
                weight_norm(
                    tnn.Conv1d(channels, channels, kernel_size, 1, dilation=d, padding=get_padding(kernel_size, d))
                )
                for d in dilations
            )
            self.convs2 = tnn.ModuleList(
                weight_norm(tnn.Conv1d(channels, channels, kernel_size, 1, padding=get_padding(kernel_size, 1)))
                for _ in dilations
            )

        def forward(self, x):
            for c1, c2 in zip(self.convs1, self.convs2):
                x = c2(F.leaky_relu(c1(F.leaky_relu(x, LRELU_SLOPE)), LRELU_SLOPE)) + x
            return x

    class Generator(tnn.Module):
        def __init__(self):
            super().__init__()
            self.conv_pre = weight_norm(tnn.Conv1d(config.mels, config.initial_channels, 7, 1, padding=3))
            self.ups = tnn.ModuleList(
                weight_norm(
                    tnn.ConvTranspose1d(
                        config.initial_channels // 2**i, config.stage_channels(i), k, u, padding=(k - u) // 2
                    )
                )
                for i, (u, k) in enumerate(zip(config.upsample_rates, config.upsample_kernels))
            )
            self.resblocks = tnn.ModuleList(
                ResBlock1(config.stage_channels(i), k, d)
                for i in range(len(self.ups))
                for k, d in zip(config.resblock_kernels, config.resblock_dilations)
            )
            self.conv_post = weight_norm(tnn.Conv1d(config.stage_channels(len(self.ups) - 1), 1, 7, 1, padding=3))

        def forward(self, x):
            x = self.conv_pre(x)
            kernels = len(config.resblock_kernels)
            for i, up in enumerate(self.ups):
                x = up(F.leaky_relu(x, LRELU_SLOPE))
                x = sum(self.resblocks[i * kernels + j](x) for j in range(kernels)) / kernels
            return torch.tanh(self.conv_post(F.leaky_relu(x)))

    return Generator()


def write_checkpoint(config: Config, path: str, seed: int = 0):
    """A torch generator with trained-looking weights (loaded with load_state_dict), saved as safetensors."""
    import torch
    from safetensors.torch import save_file

    model = torch_generator(config).eval()
    generator = torch.Generator().manual_seed(seed)
    state = {}
    for key, value in model.state_dict().items():
        if key.endswith("weight_g"):  # magnitudes of a trained model: well away from torch's initial ‖v‖
            value = value.abs() * (0.5 + torch.rand(value.shape, generator=generator))
        else:
            value = value + 0.05 * torch.randn(value.shape, generator=generator)
        state[key] = value
    model.load_state_dict(state)  # no forward yet: every old-style hook's module.weight is now stale
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, path)
    return model


# --- JAX side: no torch from here on ----------------------------------------------------------


class ResBlock(nn.Module):
    channels: int
    kernel_size: int
    dilations: Sequence[int]

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        k = self.kernel_size
        for j, d in enumerate(self.dilations):
            xt = nn.Conv(self.channels, (k,), kernel_dilation=d, padding=get_padding(k, d), name=f"convs1_{j}")(
                nn.leaky_relu(x, LRELU_SLOPE)
            )
            xt = nn.Conv(self.channels, (k,), padding=get_padding(k, 1), name=f"convs2_{j}")(
                nn.leaky_relu(xt, LRELU_SLOPE)
            )
            x = xt + x
        return x


class Generator(nn.Module):
    """HiFi-GAN's generator in Flax: channels-last mel ``(N, T, mels)`` → audio ``(N, T·Πu, 1)``."""

    config: Config

    @nn.compact
    def __call__(self, mel: jax.Array) -> jax.Array:
        c = self.config
        x = nn.Conv(c.initial_channels, (7,), padding=3, name="conv_pre")(mel)
        kernels = len(c.resblock_kernels)
        for i, (u, k) in enumerate(zip(c.upsample_rates, c.upsample_kernels)):
            x = nn.leaky_relu(x, LRELU_SLOPE)
            x = ConvTranspose(c.stage_channels(i), (k,), strides=u, padding=(k - u) // 2, name=f"ups_{i}")(x)
            blocks = [
                ResBlock(c.stage_channels(i), rk, rd, name=f"resblocks_{i * kernels + j}")
                for j, (rk, rd) in enumerate(zip(c.resblock_kernels, c.resblock_dilations))
            ]
            x = sum(block(x) for block in blocks) / kernels
        x = nn.Conv(1, (7,), padding=3, name="conv_post")(nn.leaky_relu(x, 0.01))
        return jnp.tanh(x)


# HiFi-GAN's weights are all (out, in, k) convolutions except the upsamplers. Naming the kinds keeps the
# conversion exact even where a conv and a transposed conv weight would have the same shape.
KINDS = {"ups.*": "conv_transpose", "*": "conv"}


def port(path: str, config: Config, frames: int = 8):
    """``(flax model, variables, conversion)`` from a safetensors checkpoint, without torch."""
    model = Generator(config)
    template = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, frames, config.mels)))
    conversion = torch_to_flax(load_state_dict(path), linen_path, kinds=KINDS, template=template)
    return model, conversion.variables, conversion


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--frames", type=int, default=16, help="mel frames")
    parser.add_argument("--channels", type=int, default=64, help="upsample_initial_channel")
    parser.add_argument("--checkpoint", default=None, help="where to write the safetensors file (default: a temp dir)")
    args = parser.parse_args(argv)

    import torch

    config = Config(initial_channels=args.channels)
    with tempfile.TemporaryDirectory() as directory:
        path = args.checkpoint or os.path.join(directory, "hifigan.safetensors")
        torch_model = write_checkpoint(config, path)
        mel = torch.randn(args.batch, config.mels, args.frames, generator=torch.Generator().manual_seed(1))

        flax_model, variables, conversion = port(path, config, args.frames)
        forms = {layer.weight_form for layer in conversion.layers.values()}
        print(
            f"{os.path.basename(path)}: {len(conversion.layers)} layers ({', '.join(sorted(forms))}) -> Flax, "
            f"{len(conversion.unused)} keys unused, {len(conversion.missing)} leaves missing"
        )
        audio = np.asarray(jax.jit(flax_model.apply)(variables, jnp.asarray(mel.numpy()).transpose(0, 2, 1)))
        audio = audio.transpose(0, 2, 1)  # (N, T, 1) -> torch's (N, 1, T)
        with torch.no_grad():
            expected = torch_model(mel).numpy()  # torch's forward recomputes the weight-normed weights

        tolerance = relative_tolerance("float32") * float(np.abs(expected).max())
        difference = float(np.abs(audio - expected).max()) if audio.shape == expected.shape else float("inf")
        print(f"mel {tuple(mel.shape)} -> audio {expected.shape} (torch) / {audio.shape} (Flax + jtconv)")
        print(f"max |flax - torch| = {difference:.2e}  (float32 tolerance 1e-5 * max|y| = {tolerance:.2e})")
        equal = difference <= tolerance
        print("equal end to end:", equal)

        fresh = torch_generator(config).eval()  # another weight-normed model, for weights fine-tuned in JAX
        back = flax_to_torch(variables, linen_path, template=fresh.state_dict(), kinds=KINDS, tensors=True)
        fresh.load_state_dict(back.state_dict, strict=True)
        with torch.no_grad():
            again = fresh(mel).numpy()
        written_back = float(np.abs(again - expected).max()) <= tolerance
        print(f"written back to a weight-normed torch model (g = ||w||, v = w): equal: {written_back}")
    return 0 if equal and written_back else 1


if __name__ == "__main__":
    raise SystemExit(main())
