"""Train a small convolutional autoencoder whose decoder upsamples with jtconv.

Synthetic data: 16×16 grey images, each a Gaussian blob at a random position
with a random width. The encoder (``flax.linen.Conv``, stride 2 twice) squeezes
an image to 4×4×8; the decoder (``jtconv.linen.ConvTranspose``, kernel 4,
stride 2, padding 1: ``out = (i − 1)·2 − 2 + 4 = 2i``) grows it back to 16×16.
Trained with optax Adam on CPU; a rich progress bar shows the loss. Run::

    python examples/train_decoder.py [--steps 300] [--batch 32] [--seed 0]
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from jtconv.linen import ConvTranspose

SIZE = 16


def blobs(key: jax.Array, batch: int) -> jax.Array:
    """``(batch, 16, 16, 1)`` images of one Gaussian blob each, values in [0, 1]."""
    k_center, k_width = jax.random.split(key)
    center = jax.random.uniform(k_center, (batch, 1, 1, 2), minval=3.0, maxval=SIZE - 3.0)
    width = jax.random.uniform(k_width, (batch, 1, 1, 1), minval=1.5, maxval=3.0)
    grid = jnp.stack(jnp.meshgrid(jnp.arange(SIZE), jnp.arange(SIZE), indexing="ij"), axis=-1)[None]
    distance2 = jnp.sum((grid - center) ** 2, axis=-1, keepdims=True)
    return jnp.exp(-distance2 / (2 * width**2))


class AutoEncoder(nn.Module):
    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        x = nn.relu(nn.Conv(16, (4, 4), strides=2, padding=1)(x))  # 8×8
        x = nn.Conv(8, (4, 4), strides=2, padding=1)(x)  # 4×4 code
        x = nn.relu(ConvTranspose(16, (4, 4), strides=2, padding=1)(x))  # 8×8
        return ConvTranspose(1, (4, 4), strides=2, padding=1)(x)  # 16×16


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.steps < 1:
        parser.error("--steps must be >= 1")

    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    model = AutoEncoder()
    key_init, key_data = jax.random.split(jax.random.key(args.seed))
    params = model.init(key_init, blobs(key_data, 1))["params"]
    optimizer = optax.adam(args.lr)
    opt_state = optimizer.init(params)

    def loss_fn(params, images):
        return jnp.mean((model.apply({"params": params}, images) - images) ** 2)

    @jax.jit
    def step(params, opt_state, key):
        images = blobs(key, args.batch)
        loss, grads = jax.value_and_grad(loss_fn)(params, images)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    eval_images = blobs(jax.random.key(args.seed + 1), 256)
    initial = float(loss_fn(params, eval_images))
    print(f"held-out loss before training: {initial:.5f}")
    report_every = max(args.steps // 6, 1)
    with Progress(
        TextColumn("training"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TextColumn("loss {task.fields[loss]:.5f}"),
        TimeElapsedColumn(),
    ) as progress:
        task = progress.add_task("train", total=args.steps, loss=float("nan"))
        for i, key in enumerate(jax.random.split(key_data, args.steps), start=1):
            params, opt_state, loss = step(params, opt_state, key)
            progress.update(task, advance=1, loss=float(loss))
            if i % report_every == 0 or i == args.steps:
                progress.console.print(f"step {i:4d}  train loss {float(loss):.5f}")
    final = float(loss_fn(params, eval_images))
    print(
        f"held-out loss after {args.steps} steps: {final:.5f} (fell from {initial:.5f})"
        if final < initial
        else f"held-out loss after {args.steps} steps: {final:.5f} (did not fall from {initial:.5f})"
    )
    return 0 if final < initial else 1


if __name__ == "__main__":
    raise SystemExit(main())
