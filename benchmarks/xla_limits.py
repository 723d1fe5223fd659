"""Measure the XLA CPU limits behind jtconv's remaining forward gap.

    python benchmarks/xla_limits.py

The layers that stay slower than torch on the CPU have few channels (16–64).
This script measures the three facts that explain it, side by side with torch
in one process:

1. **XLA's convolution runs on one thread below 128 output channels.** For a
   stride-1 k5 layer with 32 input channels it prints the wall time and the
   CPU-time / wall-time ratio (≈ 1: one busy core; ≈ cores: all busy) for
   16–128 output channels, and torch with all threads and with one.
2. **Independent convolutions are not overlapped.** The same layer split into
   2 (batch halves) or 8 (row slabs) independent convolutions still keeps one
   core busy.
3. **GEMM + col2im is bandwidth-bound.** For a few-channel strided layer it
   prints the tap-product GEMM alone, the whole ``matmul`` forward, torch,
   and the time the col2im's bytes take at this machine's copy bandwidth.

Nothing is asserted: the numbers are the evidence quoted in the README.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

import harness

Call = Callable[[], object]


def timed(calls: dict[str, Call], repeats: int = 9) -> dict[str, float]:
    """Median milliseconds per call, A/B-interleaved (:func:`harness.time_interleaved`)."""
    timings = harness.time_interleaved(calls, repeats=repeats, warmup=2, min_sample_s=0.02)
    return {name: t.median_s * 1e3 for name, t in timings.items()}


def busy_cores(call: Call, seconds: float = 0.5) -> float:
    """Process CPU time over wall time while ``call`` runs back to back."""
    call()
    calls = 0
    wall0, cpu0 = time.perf_counter(), time.process_time()
    while time.perf_counter() - wall0 < seconds:
        call()
        calls += 1
    return (time.process_time() - cpu0) / (time.perf_counter() - wall0)


def jax_call(fn, *args) -> Call:
    compiled = jax.jit(fn).lower(*args).compile()
    return lambda: jax.block_until_ready(compiled(*args))


def conv_threads(rng: np.random.Generator) -> None:
    import torch

    print("1. stride-1 k5 convolution, x(2,32,64,64), XLA (NCHW) vs torch")
    print(f"   {'Cout':>5} {'XLA ms':>8} {'XLA cores':>10} {'torch ms':>9} {'torch 1-thread ms':>18}")
    threads = torch.get_num_threads()
    x = rng.standard_normal((2, 32, 64, 64), dtype=np.float32)
    for cout in (16, 32, 64, 128):
        w = rng.standard_normal((cout, 32, 5, 5), dtype=np.float32)
        xla = jax_call(_conv, jnp.asarray(x), jnp.asarray(w))
        tx, tw = torch.from_numpy(x), torch.from_numpy(w)

        def torch_call(tx=tx, tw=tw):
            with torch.no_grad():
                return torch.nn.functional.conv2d(tx, tw, padding=2)

        ms = timed({"xla": xla, "torch": torch_call})
        cores = busy_cores(xla)
        torch.set_num_threads(1)
        one = timed({"torch1": torch_call}, repeats=5)["torch1"]
        torch.set_num_threads(threads)
        print(f"   {cout:>5} {ms['xla']:>8.2f} {cores:>10.2f} {ms['torch']:>9.2f} {one:>18.2f}")


def _conv(x, w):
    return lax.conv_general_dilated(x, w, (1, 1), [(2, 2), (2, 2)], dimension_numbers=("NCHW", "OIHW", "NCHW"))


def split_convs(rng: np.random.Generator) -> None:
    print("2. the Cout=32 layer as independent convolutions")
    x = jnp.asarray(rng.standard_normal((2, 32, 64, 64), dtype=np.float32))
    w = jnp.asarray(rng.standard_normal((32, 32, 5, 5), dtype=np.float32))

    def batch_halves(x, w):
        return jnp.concatenate([_conv(x[:1], w), _conv(x[1:], w)], axis=0)

    def row_slabs(x, w, slabs=8):
        xp = jnp.pad(x, ((0, 0), (0, 0), (2, 2), (0, 0)))
        rows = x.shape[2] // slabs

        def conv(part):
            return lax.conv_general_dilated(
                part, w, (1, 1), [(0, 0), (2, 2)], dimension_numbers=("NCHW", "OIHW", "NCHW")
            )

        return jnp.concatenate([conv(xp[:, :, i * rows : (i + 1) * rows + 4]) for i in range(slabs)], axis=2)

    calls = {
        "1 conv": jax_call(_conv, x, w),
        "2 convs": jax_call(batch_halves, x, w),
        "8 convs": jax_call(row_slabs, x, w),
    }
    ms = timed(calls)
    for name, call in calls.items():
        print(f"   {name:>8}: {ms[name]:6.2f} ms, {busy_cores(call):.2f} cores busy")


def gemm_floor(rng: np.random.Generator) -> None:
    import torch

    from jtconv import conv_transpose

    kwargs = dict(stride=2, padding=2, output_padding=1)
    x_shape, w_shape = (4, 64, 32, 32), (64, 32, 5, 5)
    print(f"3. few-channel strided layer x{x_shape}→32 k5 s2 p2 op1 ('same5')")
    x = jnp.asarray(rng.standard_normal(x_shape, dtype=np.float32))
    w = jnp.asarray(rng.standard_normal(w_shape, dtype=np.float32))

    def gemm_alone(x, w):  # the tap products Z as one (T·Cout, N·S) matrix, as the lowering's dot makes them
        return lax.dot_general(
            w.reshape(64, 32 * 25).T, x.transpose(1, 0, 2, 3).reshape(64, -1), (((1,), (0,)), ((), ()))
        )

    tx, tw = torch.from_numpy(np.asarray(x).copy()), torch.from_numpy(np.asarray(w).copy())

    def torch_call():
        with torch.no_grad():
            return torch.nn.functional.conv_transpose2d(tx, tw, **kwargs)

    z_bytes = 4 * 25 * 32 * 4 * 32 * 32
    y_bytes = 4 * 4 * 32 * 64 * 64
    big = jnp.zeros(4 * 2**20, jnp.float32)  # 16 MiB
    calls = {
        "GEMM alone": jax_call(gemm_alone, x, w),
        "matmul forward": jax_call(lambda x, w: conv_transpose(x, w, algorithm="matmul", **kwargs), x, w),
        "torch": torch_call,
        "copy 16 MiB": jax_call(lambda a: a + 1, big),
    }
    ms = timed(calls)
    bandwidth = 2 * big.nbytes / (ms["copy 16 MiB"] * 1e-3)
    for name in ("GEMM alone", "matmul forward", "torch"):
        print(f"   {name:>15}: {ms[name]:6.2f} ms")
    print(
        f"   copy bandwidth {bandwidth / 1e9:.1f} GB/s: reading Z ({z_bytes / 2**20:.1f} MiB) and writing y "
        f"({y_bytes / 2**20:.1f} MiB) takes ≥ {(z_bytes + y_bytes) / bandwidth * 1e3:.2f} ms"
    )


def main() -> int:
    cores = harness.usable_cores()
    print(f"jax {jax.__version__} on {jax.default_backend()}, {cores} usable cores, {harness.cpu_model()}")
    if jax.default_backend() != "cpu":
        print("these limits are about XLA's CPU backend; run on a CPU", file=sys.stderr)
        return 1
    rng = np.random.default_rng(0)
    conv_threads(rng)
    split_convs(rng)
    gemm_floor(rng)
    return 0


if __name__ == "__main__":
    sys.exit(main())
