"""``jtconv tune``: measure layers' plans on this machine and store them as wisdom.

Layers come from ``--layer`` (repeatable; ``x=16,128,16,16 w=128,64,4,4 stride=2 padding=1``: keys ``x``, ``w``,
``stride``, ``padding``, ``output_padding``, ``groups``, ``dilation``, ``dtype``, per-dimension values as comma
lists), ``--layers FILE`` (a JSON list of objects with the same keys) or ``--model module:function`` (called with no
arguments under measured planning: every jtconv layer it traces is measured). It prints every candidate's time per
role and training program, the chosen plan, the estimate's plan and the races the estimate's choice won only as a
tie (within ``TIE_FRACTION``); a layer already in wisdom shows its stored measurement. The plans go to the wisdom
directory (:func:`jtconv.plans.wisdom.wisdom_dir`), where ``planning("measure")`` finds them without measuring again.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import sys

from jtconv.commands import Console

HELP = "measure the fastest plan of given layers on this machine and store it as wisdom"

_INT_TUPLES = ("x", "w", "stride", "padding", "output_padding", "dilation")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--layer",
        action="append",
        default=[],
        metavar="SPEC",
        help="a layer: 'x=N,C,H,W w=Cin,Cout/G,kH,kW stride=2 padding=1 [groups=G dilation=D dtype=float32]'",
    )
    parser.add_argument("--layers", metavar="FILE", help="JSON list of layers (objects with the --layer keys)")
    parser.add_argument(
        "--model",
        metavar="MODULE:FUNCTION",
        help="call FUNCTION() (it builds inputs and runs a model) and measure every layer it traces",
    )
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    parser.add_argument("--forget", action="store_true", help="clear stored wisdom first")


def parse_layer(text: str) -> dict:
    """``"x=1,4,5 w=4,2,3 stride=2"`` → ``{"x": (1, 4, 5), "w": (4, 2, 3), "stride": 2}``."""
    layer: dict = {}
    for item in text.split():
        key, sep, value = item.partition("=")
        if not sep or not value:
            raise ValueError(f"--layer item {item!r} must be key=value")
        if key == "dtype":
            layer[key] = value
        elif key == "groups":
            layer[key] = int(value)
        elif key in _INT_TUPLES:
            numbers = tuple(int(v) for v in value.split(","))
            layer[key] = numbers if key in ("x", "w") or len(numbers) > 1 else numbers[0]
        else:
            raise ValueError(f"--layer key {key!r} unknown; keys are {', '.join((*_INT_TUPLES, 'groups', 'dtype'))}")
    for needed in ("x", "w"):
        if needed not in layer:
            raise ValueError(f"--layer {text!r} needs {needed}=…")
    return layer


def _layers_from_file(path: str) -> list[dict]:
    with open(path) as f:
        data = json.load(f)
    if not isinstance(data, list) or not all(isinstance(item, dict) for item in data):
        raise ValueError(f"--layers {path}: expected a JSON list of objects")
    return [
        parse_layer(" ".join(f"{k}={','.join(map(str, v)) if isinstance(v, list) else v}" for k, v in item.items()))
        for item in data
    ]


def run(args: argparse.Namespace) -> int:
    try:
        layers = [parse_layer(text) for text in args.layer]
        if args.layers:
            layers += _layers_from_file(args.layers)
    except (ValueError, OSError, json.JSONDecodeError) as error:
        print(f"jtconv tune: error: {error}", file=sys.stderr)
        return 2
    if not layers and not args.model:
        print("jtconv tune: error: give --layer, --layers or --model", file=sys.stderr)
        return 2

    import jtconv
    from jtconv.plans import measure, wisdom

    if args.forget:
        wisdom.forget_wisdom()
        measure.forget_measurements()
    found: list = []
    progress = Console().progress(len(layers) or None, "measuring", transient=True)
    with contextlib.nullcontext(lambda n: None) if args.json else progress as advance:  # JSON: stdout as it is

        def listen(measurement) -> None:
            found.append(measurement)
            advance(1)

        measure._listeners.append(listen)
        try:
            for layer in layers:
                kwargs = {k: v for k, v in layer.items() if k not in ("x", "w")}
                try:
                    with jtconv.planning("measure"):
                        jtconv.plan_for(layer["x"], layer["w"], **kwargs)
                except (ValueError, TypeError) as error:
                    print(f"jtconv tune: error: layer {layer}: {error}", file=sys.stderr)
                    return 2
            if args.model:
                module_name, _, function_name = args.model.partition(":")
                if not function_name:
                    print("jtconv tune: error: --model must be MODULE:FUNCTION", file=sys.stderr)
                    return 2
                function = getattr(importlib.import_module(module_name), function_name)
                with jtconv.planning("measure"):
                    function()
        finally:
            measure._listeners.remove(listen)
    if args.json:
        print(json.dumps([_as_json(m) for m in found], indent=1))
    else:
        for m in found:
            _print_measurement(m)
        if any(m.from_wisdom for m in found):
            print("from wisdom: measured by an earlier run (--forget measures again)")
        print(f"wisdom: {wisdom.wisdom_dir()}")
    return 0


def _as_json(m) -> dict:
    return {
        "layer": json.loads(m.key),
        "plan": str(m.plan),
        "estimate": str(m.estimate),
        "times_s": m.times,
        "training_s": m.training,
        "rematch_s": m.rematch,
        "forward_race_s": m.forward_race,
        "skipped": m.skipped,
        "measure_s": m.seconds,
        "from_wisdom": m.from_wisdom,
        "ties": _ties(m),
    }


def _print_measurement(m) -> None:
    layer = json.loads(m.key)
    print(
        f"layer {layer['ndim']}d {layer['in']}→{layer['out']} k{layer['kernel']} s{layer['stride']} "
        f"batch {layer['batch']} {layer['dtype']}  ({'from wisdom, ' * m.from_wisdom}measured in {m.seconds:.1f} s)"
    )
    for role, times in m.times.items():
        print(f"  {role:17s} " + ", ".join(f"{name} {t}" for name, t in _fastest_first(times)))
    if m.forward_race:
        print("  forward race      " + ", ".join(f"{name} {t * 1e3:.3f} ms" for name, t in m.forward_race.items()))
    for label, race in (("fwd+bwd", m.training), ("rematch", m.rematch)):
        for text, t in _fastest_first(race):
            print(f"  {label} {t:>12s}  {text}")
    print(f"  chosen:   {m.plan}")
    print(f"  estimate: {m.estimate}")
    for tie in _ties(m):
        print(f"  tie:      {tie}")


def _fastest_first(race: dict) -> list[tuple[str, str]]:
    """``(name, time)`` of each entrant, fastest first, ``skipped`` ones last."""
    ordered = sorted(race.items(), key=lambda kv: (kv[1] is None, kv[1] or 0))
    return [(name, "skipped" if t is None else f"{t * 1e3:.3f} ms") for name, t in ordered]


def _ties(m) -> list[str]:
    """The races the estimate's choice won as a tie: an entrant ran faster, but by less than TIE_FRACTION."""
    from jtconv.plans.measure import TIE_FRACTION

    races = [("forward", m.forward_race or m.times["forward"], m.estimate.forward, m.plan.forward)]
    races += [
        (label, race, str(m.estimate), str(m.plan)) for label, race in (("fwd+bwd", m.training), ("rematch", m.rematch))
    ]
    ties = []
    for label, race, kept, chosen in races:
        timed = {name: t for name, t in race.items() if t is not None}
        best = min(timed, key=timed.__getitem__, default=kept)
        if chosen == kept and kept in timed and timed[best] < timed[kept] <= timed[best] * (1 + TIE_FRACTION):
            faster, estimated = (
                " ".join(p for p in a.split("  ") if p not in b.split("  ")) for a, b in ((best, kept), (kept, best))
            )
            ties.append(
                f"{label}: {faster} ran {1 - timed[best] / timed[kept]:.1%} faster than the estimate's {estimated}, "
                f"within the {TIE_FRACTION:.0%} that counts as a tie, so the estimate's was kept"
            )
    return ties
