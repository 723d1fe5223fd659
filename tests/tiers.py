"""The two test tiers: quick (the default) and full (``--full`` or ``JTCONV_FULL_TESTS=1``).

The quick tier leaves out the tests marked ``slow`` and runs every seeded sweep on a
sample of its configurations; the full tier runs every test and every configuration,
with the same assertions. The sample depends on a seed that ``tests/conftest.py``
draws once per run (``--sample-seed N`` or ``JTCONV_SAMPLE_SEED=N`` fix it) and on a
salt per test, so each test of a sweep (one per lowering, say) checks a different sample.

A sweep test is parametrized by :func:`chunks`::

    CONFIGS = testing.sweep_configs(2000, seed=...)

    @pytest.mark.parametrize("chunk", tiers.chunks(len(CONFIGS), 100, quick=40), ids=str)
    def test_sweep(chunk, algorithm):
        for i in chunk.indices(salt=algorithm):
            check(CONFIGS[i])   # on failure, report i and chunk.reproducer()

A grid of cases (configuration × dtype × lowering, say) is parametrized by :func:`product`,
which keeps every combination in the full tier and a covering subset in the quick tier.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import os
import zlib
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pytest

FULL_ENV = "JTCONV_FULL_TESTS"
SEED_ENV = "JTCONV_SAMPLE_SEED"

# Set by tests/conftest.py in pytest_configure, before any test module is imported.
FULL = False
SEED = 0


def full_from_environment() -> bool:
    """Whether ``JTCONV_FULL_TESTS`` asks for the full tier (``1``, ``true`` or ``yes``)."""
    return os.environ.get(FULL_ENV, "").strip().lower() in ("1", "true", "yes")


@dataclasses.dataclass(frozen=True)
class Chunk:
    """One test's share of a sweep over configurations ``0 .. size - 1``.

    In the full tier: the consecutive indices ``start .. stop - 1``. In the quick tier
    (``start is None``): ``quick`` distinct indices drawn from the whole sweep.
    """

    size: int
    start: int | None
    stop: int
    quick: int

    def indices(self, salt: str = "") -> list[int]:
        """The configurations this test checks, in increasing order."""
        if self.start is not None:
            return list(range(self.start, self.stop))
        rng = np.random.default_rng([SEED, zlib.crc32(salt.encode())])
        return sorted(int(i) for i in rng.choice(self.size, size=min(self.quick, self.size), replace=False))

    def reproducer(self) -> str:
        """How to rerun exactly these configurations."""
        if self.start is not None:
            return f"configurations {self.start}..{self.stop - 1} of the full sweep"
        return f"quick-tier sample, seed {SEED}: rerun with {SEED_ENV}={SEED} (or --sample-seed {SEED})"

    def __str__(self) -> str:
        return "sample" if self.start is None else str(self.start // (self.stop - self.start or 1))


def chunks(size: int, chunk: int, *, quick: int) -> list[Chunk]:
    """Parameters for a sweep of ``size`` configurations: ``size / chunk`` chunks in the
    full tier (ids ``0, 1, ...``), one sample of ``quick`` configurations in the quick tier."""
    if size % chunk:
        raise ValueError(f"chunk must divide size, got size={size}, chunk={chunk}")
    if FULL:
        return [Chunk(size, start, start + chunk, quick) for start in range(0, size, chunk)]
    return [Chunk(size, None, size, quick)]


def _id(argname: str, index: int, value: Any) -> str:
    """pytest's id for one parameter value: the value if it is a str or number, else name + index."""
    if isinstance(value, str):
        return value
    if value is None or isinstance(value, (bool, int, float)):
        return str(value)
    if callable(value) and hasattr(value, "__name__"):
        return value.__name__
    return f"{argname}{index}"


def product(axes: Mapping[str, Sequence[Any]], *, every: Sequence[str]) -> tuple[str, list[Any]]:
    """``(argnames, params)`` for ``pytest.mark.parametrize``: the cartesian product of ``axes``.

    ``axes`` maps argnames (one, or several separated by commas, whose values are then
    tuples) to their values; ids are those of stacked ``parametrize`` decorators, the
    first axis first. The quick tier runs every combination of the axes named in
    ``every``, with each other axis cycling through its values (so every value of every
    axis still runs); the other combinations are marked ``slow``.
    """
    names = list(axes)
    if not set(every) <= set(names):
        raise ValueError(f"every must name axes of {names}, got {list(every)}")
    sizes = [len(axes[name]) for name in names]
    covered = [sizes[names.index(name)] for name in every]
    kept = set()
    for k in range(max(math.prod(covered), *sizes)):
        combo = np.unravel_index(k % math.prod(covered), covered) if covered else ()
        kept.add(tuple(int(combo[every.index(n)]) if n in every else k % size for n, size in zip(names, sizes)))
    params = []
    for index in itertools.product(*(range(size) for size in sizes)):
        values: list[Any] = []
        ids = []
        for name, i in zip(names, index):
            value = axes[name][i]
            several = "," in name
            values.extend(value if several else (value,))
            parts = [a.strip() for a in name.split(",")]
            ids.extend(_id(a, i, v) for a, v in zip(parts, value if several else (value,)))
        marks = () if index in kept else (pytest.mark.slow,)
        params.append(pytest.param(*values, id="-".join(ids), marks=marks))
    return ", ".join(names), params
