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
