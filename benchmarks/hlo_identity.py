"""Whether two checkouts compile the benchmark suites to the same programs.

For every main and holdout layer, the optimised HLO of the forward and of
value_and_grad (names, metadata and source locations stripped) is hashed;
run it in two checkouts and compare the JSON files: identical hashes mean
identical programs, so identical speed.

    python benchmarks/hlo_identity.py OLD_CHECKOUT old.json
    python benchmarks/hlo_identity.py . new.json
    python benchmarks/hlo_identity.py --compare old.json new.json
"""

import hashlib
import json
import re
import sys

if sys.argv[1] == "--compare":
    a, b = (json.load(open(p)) for p in sys.argv[2:4])
    differ = [k for k in a if a[k] != b.get(k)]
    print(f"{len(a) - len(differ)} of {len(a)} programs identical; differ: {differ}")
    sys.exit(1 if differ else 0)
sys.path.insert(0, sys.argv[1])
sys.path.insert(0, sys.argv[1] + "/benchmarks")
import jax
import jax.numpy as jnp

import jtconv

from shapes import select_shapes

out = {}
for suite in ("main", "holdout"):
    for s in select_shapes(None, suite):
        x = jnp.zeros(s.x_shape, jnp.float32)
        w = jnp.zeros(s.w_shape, jnp.float32)
        kw = dict(
            stride=s.stride, padding=s.padding, output_padding=s.output_padding, groups=s.groups, dilation=s.dilation
        )

        def f(x, w, kw=kw):
            return jtconv.conv_transpose(x, w, **kw)

        def g(x, w, c, f=f):
            return jax.value_and_grad(lambda x, w: jnp.sum(f(x, w) * c), (0, 1))(x, w)

        c = jnp.zeros(jax.eval_shape(f, x, w).shape, jnp.float32)
        for name, prog, args in (("fwd", f, (x, w)), ("fwdbwd", g, (x, w, c))):
            text = jax.jit(prog).lower(*args).compile().as_text()
            text = re.sub(r", metadata=\{[^}]*\}", "", text)
            text = re.sub(r"%[\w.\-]+", "%v", text)
            text = "\n".join(
                line for line in text.splitlines() if not line.startswith("HloModule") and not re.match(r"^\d+ ", line)
            )
            out[f"{s.name}/{name}"] = hashlib.sha256(text.encode()).hexdigest()[:12]
json.dump(out, open(sys.argv[2], "w"), indent=0)
