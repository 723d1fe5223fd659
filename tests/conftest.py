"""Test tiers (see ``tests/tiers.py`` and CONTRIBUTING.md).

``python -m pytest -q -n 2 tests`` runs the quick tier: tests marked ``slow`` are
deselected and the sweeps check a seeded sample. ``--full`` (or ``JTCONV_FULL_TESTS=1``)
runs the full tier. ``--sample-seed N`` (or ``JTCONV_SAMPLE_SEED=N``) fixes the
quick tier's sample; otherwise each run draws a seed, prints it, and prints a
command that reruns the failures with it.
"""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest

import tiers


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("jtconv")
    group.addoption(
        "--full",
        action="store_true",
        default=False,
        help=f"run the full tier: the tests marked slow and every sweep configuration (also {tiers.FULL_ENV}=1)",
    )
    group.addoption(
        "--sample-seed",
        type=int,
        default=None,
        help=f"seed of the quick tier's sweep samples (also {tiers.SEED_ENV}=N; default: drawn per run)",
    )


def _seed(config: pytest.Config) -> int:
    """The run's sample seed; xdist workers take the one their controller drew."""
    workerinput = getattr(config, "workerinput", None)
    if workerinput is not None:
        return int(workerinput["jtconv_sample_seed"])
    if config.getoption("sample_seed") is not None:
        return int(config.getoption("sample_seed"))
    if os.environ.get(tiers.SEED_ENV, "").strip():
        try:
            return int(os.environ[tiers.SEED_ENV])
        except ValueError:
            value = os.environ[tiers.SEED_ENV]
            raise pytest.UsageError(f"{tiers.SEED_ENV} must be an integer, got {value!r}") from None
    return random.SystemRandom().randrange(1_000_000)


def pytest_configure(config: pytest.Config) -> None:
    tiers.FULL = bool(config.getoption("full")) or tiers.full_from_environment()
    tiers.SEED = _seed(config)


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node) -> None:
    """pytest-xdist: every worker draws the same samples as the controller."""
    node.workerinput["jtconv_sample_seed"] = tiers.SEED


def _named_explicitly(item: pytest.Item, config: pytest.Config) -> bool:
    """Whether the command line names this test (``path::test[...]``): then it runs in any tier."""
    for arg in config.args:
        path, sep, name = arg.partition("::")
        if sep and Path(path).resolve() == item.path and item.nodeid.split("::", 1)[1].startswith(name):
            return True
    return False


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if tiers.FULL:
        return
    slow = {id(item) for item in items if item.get_closest_marker("slow") and not _named_explicitly(item, config)}
    if slow:
        config.hook.pytest_deselected(items=[item for item in items if id(item) in slow])
        items[:] = [item for item in items if id(item) not in slow]


def pytest_report_header(config: pytest.Config) -> str:
    return "jtconv tier: full" if tiers.FULL else f"jtconv tier: quick, sample seed {tiers.SEED}"


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:
    if tiers.FULL:
        terminalreporter.write_line("jtconv full tier: every test, every sweep configuration")
        return
    terminalreporter.write_line(
        f"jtconv quick tier: tests marked slow deselected, sweeps sampled with seed {tiers.SEED}"
        f" ({tiers.SEED_ENV}={tiers.SEED} repeats the sample; --full runs everything)"
    )
    failed = sorted({report.nodeid for report in terminalreporter.stats.get("failed", [])})
    if failed:
        ids = " ".join(f"'{nodeid}'" for nodeid in failed[:20])
        terminalreporter.write_line(f"rerun the failures with: {tiers.SEED_ENV}={tiers.SEED} python -m pytest -q {ids}")


@pytest.fixture
def quick_measurements(tmp_path, monkeypatch):
    """Every measurement made during the test (a list), in a wisdom cache of its own, with short timing."""
    from jtconv.plans import measure, wisdom

    monkeypatch.setenv("JTCONV_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(measure, "MIN_RUNS", 1)
    monkeypatch.setattr(measure, "MAX_RUNS", 2)
    monkeypatch.setattr(measure, "TRAINING_ROUNDS", 1)
    found: list = []
    monkeypatch.setattr(measure, "_listeners", [found.append])
    wisdom.forget_wisdom()
    measure.forget_measurements()
    yield found
    wisdom.forget_wisdom()
    measure.forget_measurements()
