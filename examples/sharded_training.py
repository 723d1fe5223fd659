"""Data-parallel training of a small Flax decoder built on ``jtconv.linen.ConvTranspose``.

The decoder maps a 16-d latent ``z`` to a 16×16 image (Dense → 4×4×32 →
two stride-2 transposed convolutions, PyTorch's ``ConvTranspose2d(k=4, s=2,
p=1)`` each); it learns to draw a Gaussian blob whose position is a fixed
function of ``z``. The batch is sharded over every device on a one-axis mesh
``("data",)`` and the parameters and optimizer state are replicated, so each
device runs the convolutions on its slice of the batch and XLA adds one
all-reduce of the gradients per step. Nothing here depends on the device
kind or count::

    # 8 simulated devices on a CPU-only machine
    XLA_FLAGS=--xla_force_host_platform_device_count=8 python examples/sharded_training.py --steps 200

    # every GPU of one host: unchanged
    python examples/sharded_training.py --steps 200

    # several hosts: run the same command on every host (see docs/sharding.md)
    python examples/sharded_training.py --multi-host --steps 200

Needs ``optax`` (``pip install 'jtconv[examples]'``).
"""

from __future__ import annotations

import argparse
import json
import re

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from jtconv.linen import ConvTranspose

LATENT = 16
IMAGE = 16


class Decoder(nn.Module):
    """``z (N, 16) → image (N, 16, 16, 1)``: Dense, then two PyTorch-style ``ConvTranspose2d(k=4, s=2, p=1)``."""

    @nn.compact
    def __call__(self, z: jax.Array) -> jax.Array:
        h = nn.relu(nn.Dense(4 * 4 * 32)(z)).reshape(z.shape[0], 4, 4, 32)
        h = nn.relu(ConvTranspose(features=16, kernel_size=(4, 4), strides=2, padding=1)(h))  # 4 → 8
        return ConvTranspose(features=1, kernel_size=(4, 4), strides=2, padding=1)(h)  # 8 → 16


def make_batch(rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Latents and their target images: a blob centred at ``8 + 5·tanh(z₀), 8 + 5·tanh(z₁)``, σ = 2."""
    z = rng.standard_normal((size, LATENT)).astype(np.float32)
    centre = 7.5 + 5.0 * np.tanh(z[:, :2])
    grid = np.arange(IMAGE, dtype=np.float32)
    dy = (grid[None, :] - centre[:, :1]) ** 2
    dx = (grid[None, :] - centre[:, 1:2]) ** 2
    image = np.exp(-(dy[:, :, None] + dx[:, None, :]) / (2 * 2.0**2))
    return z, image[..., None].astype(np.float32)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200, help="training steps (default 200)")
    parser.add_argument("--batch-per-device", type=int, default=8, help="examples per device per step (default 8)")
    parser.add_argument("--learning-rate", type=float, default=1e-2)
    parser.add_argument("--log-every", type=int, default=10)
    parser.add_argument(
        "--multi-host", action="store_true", help="call jax.distributed.initialize() first (one process per host)"
    )
    parser.add_argument("--json", action="store_true", help="end with a one-line JSON summary")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    if args.steps < 1 or args.batch_per_device < 1:
        raise ValueError("--steps and --batch-per-device must be >= 1")
    if args.multi_host:
        jax.distributed.initialize()  # coordinator, process count and id from the cluster's environment

    # One mesh axis over every device of every process; the batch is split along it.
    mesh = jax.make_mesh((jax.device_count(),), ("data",), axis_types=(jax.sharding.AxisType.Auto,))
    batch_sharding = NamedSharding(mesh, P("data"))
    replicated = NamedSharding(mesh, P())
    global_batch = args.batch_per_device * jax.device_count()
    local_batch = global_batch // jax.process_count()
    is_main = jax.process_index() == 0

    model = Decoder()
    optimizer = optax.adam(args.learning_rate)
    params = jax.jit(model.init, out_shardings=replicated)(jax.random.key(0), jnp.zeros((1, LATENT)))
    opt_state = jax.jit(optimizer.init, out_shardings=replicated)(params)

    def loss_fn(params, z, target):
        return jnp.mean((model.apply(params, z) - target) ** 2)

    @jax.jit
    def train_step(params, opt_state, z, target):
        loss, grads = jax.value_and_grad(loss_fn)(params, z, target)  # grads: all-reduced over "data" by XLA
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    # Each process makes its own slice of the global batch; on one host that is all of it.
    rng = np.random.default_rng(jax.process_index())

    def next_batch():
        return tuple(jax.make_array_from_process_local_data(batch_sharding, a) for a in make_batch(rng, local_batch))

    z, target = next_batch()
    forward = jax.jit(model.apply).lower(params, z).compile().as_text()
    forward_collectives = sorted(
        set(re.findall(r"\b(all-reduce|all-gather|reduce-scatter|collective-permute|all-to-all)(?:-start)?\(", forward))
    )
    if is_main:
        devices = f"{jax.device_count()} device{'s' if jax.device_count() > 1 else ''} ({jax.devices()[0].platform})"
        print(
            f"{devices}, {jax.process_count()} process(es); global batch {global_batch}, sharded {batch_sharding.spec}"
        )
        if jax.device_count() == 1:
            print(
                "one device: every PartitionSpec is equivalent to replication; "
                "run with more devices to see the batch split"
            )
        print(f"collectives in the compiled forward pass: {forward_collectives or 'none'}")

    losses = []
    for step in range(1, args.steps + 1):
        params, opt_state, loss = train_step(params, opt_state, z, target)
        losses.append(float(loss))
        if is_main and (step % args.log_every == 0 or step in (1, args.steps)):
            print(f"step {step:4d}  loss {losses[-1]:.5f}")
        z, target = next_batch()

    images = jax.jit(model.apply)(params, z)
    # XLA may report an equivalent spec (P() on one device): name it as the batch's when they agree.
    like_batch = images.sharding.is_equivalent_to(batch_sharding, images.ndim)
    output_spec = batch_sharding.spec if like_batch else images.sharding.spec
    params_replicated = all(p.sharding.is_fully_replicated for p in jax.tree.leaves(params))
    if is_main:
        print(
            f"decoded images {images.shape}, sharded {output_spec}"
            f"{' like the batch' if like_batch else ''}; parameters replicated: {params_replicated}"
        )
    if args.json and is_main:
        print(
            json.dumps(
                {
                    "devices": jax.device_count(),
                    "steps": args.steps,
                    "batch_sharding": list(z.sharding.spec),
                    "output_sharding": list(output_spec),
                    "params_replicated": params_replicated,
                    "forward_collectives": forward_collectives,
                    "initial_loss": losses[0],
                    "final_loss": losses[-1],
                }
            )
        )


if __name__ == "__main__":
    main()
