"""The test tiers of ``tests/tiers.py``: the full tier checks every configuration once,
the quick tier a reproducible sample that depends on the seed and the salt."""

from __future__ import annotations

import pytest

import tiers


def _chunks(monkeypatch, full: bool, seed: int = 5) -> list[tiers.Chunk]:
    monkeypatch.setattr(tiers, "FULL", full)
    monkeypatch.setattr(tiers, "SEED", seed)
    return tiers.chunks(60, 10, quick=4)


def test_full_tier_chunks_cover_every_configuration_once(monkeypatch):
    chunks = _chunks(monkeypatch, full=True)
    assert [str(c) for c in chunks] == ["0", "1", "2", "3", "4", "5"]
    indices = [i for chunk in chunks for i in chunk.indices(salt="matmul")]
    assert indices == list(range(60))
    assert chunks[2].indices(salt="a") == chunks[2].indices(salt="b") == list(range(20, 30))
    assert "configurations 20..29" in chunks[2].reproducer()


def test_quick_tier_samples_depend_on_seed_and_salt_only(monkeypatch):
    (chunk,) = _chunks(monkeypatch, full=False, seed=5)
    assert str(chunk) == "sample"
    sample = chunk.indices(salt="matmul")
    assert len(sample) == len(set(sample)) == 4
    assert sample == sorted(sample) and all(0 <= i < 60 for i in sample)
    assert chunk.indices(salt="matmul") == sample
    assert {tuple(chunk.indices(salt=s)) for s in ("reference", "matmul", "conv", "split", "phase")} != {tuple(sample)}
    assert "seed 5" in chunk.reproducer() and f"{tiers.SEED_ENV}=5" in chunk.reproducer()
    by_seed = {seed: tuple(_sample_with_seed(monkeypatch, seed, "matmul")) for seed in range(10)}
    assert by_seed[5] == tuple(sample)
    assert len(set(by_seed.values())) > 1


def _sample_with_seed(monkeypatch, seed: int, salt: str) -> list[int]:
    monkeypatch.setattr(tiers, "SEED", seed)
    (chunk,) = tiers.chunks(60, 10, quick=4)
    return chunk.indices(salt=salt)


def test_a_sample_never_exceeds_the_sweep(monkeypatch):
    monkeypatch.setattr(tiers, "FULL", False)
    (chunk,) = tiers.chunks(6, 3, quick=10)
    assert chunk.indices(salt="x") == list(range(6))


def test_chunk_must_divide_the_sweep():
    with pytest.raises(ValueError, match="chunk must divide size"):
        tiers.chunks(10, 3, quick=2)


def _marked_slow(param) -> bool:
    return any(mark.name == "slow" for mark in param.marks)


def test_product_keeps_every_combination_of_the_named_axes_and_every_value(monkeypatch):
    argnames, params = tiers.product(
        {"name": ["a", "b", "c", "d"], "dtype": ["float32", "bfloat16"], "algorithm": ["reference", "matmul", "conv"]},
        every=("dtype", "algorithm"),
    )
    assert argnames == "name, dtype, algorithm"
    assert len(params) == 24 and len({p.id for p in params}) == 24
    assert params[0].id == "a-float32-reference" and params[0].values == ("a", "float32", "reference")
    quick = [p.values for p in params if not _marked_slow(p)]
    assert len(quick) == 6
    assert {(dtype, algorithm) for _, dtype, algorithm in quick} == {
        (d, a) for d in ("float32", "bfloat16") for a in ("reference", "matmul", "conv")
    }
    assert {name for name, _, _ in quick} == {"a", "b", "c", "d"}


def test_product_flattens_several_argnames_and_names_their_ids_like_pytest():
    cases = [((1, 2), dict(stride=2)), ((3, 4), dict(stride=1))]
    argnames, params = tiers.product({"x_shape, kwargs": cases, "algorithm": ["matmul"]}, every=())
    assert argnames == "x_shape, kwargs, algorithm"
    assert [p.id for p in params] == ["x_shape0-kwargs0-matmul", "x_shape1-kwargs1-matmul"]
    assert params[1].values == ((3, 4), dict(stride=1), "matmul")
    assert sum(not _marked_slow(p) for p in params) == 2  # one per value of the longest axis
    with pytest.raises(ValueError, match="every must name axes"):
        tiers.product({"a": [1]}, every=("b",))
