"""Whether two checkouts compile the benchmark suites to the same programs.

For every main and holdout layer, the optimised HLO of the forward and of
value_and_grad (names, metadata and source locations stripped) is hashed;
run it in two checkouts and compare the JSON files: identical hashes mean
identical programs, so identical speed.

    python benchmarks/hlo_identity.py OLD_CHECKOUT old.json
    python benchmarks/hlo_identity.py . new.json
    python benchmarks/hlo_identity.py --compare old.json new.json
"""

import sys, re, hashlib, json
if sys.argv[1] == "--compare":
    a, b = (json.load(open(p)) for p in sys.argv[2:4])
    differ = [k for k in a if a[k] != b.get(k)]
    print(f"{len(a) - len(differ)} of {len(a)} programs identical; differ: {differ}")
    sys.exit(1 if differ else 0)
sys.path.insert(0, sys.argv[1]); sys.path.insert(0, sys.argv[1] + "/benchmarks")
import jax, jax.numpy as jnp, numpy as np, jtconv
from shapes import select_shapes
out = {}
for suite in ("main", "holdout"):
    for s in select_shapes(None, suite):
        x = jnp.zeros(s.x_shape, jnp.float32); w = jnp.zeros(s.w_shape, jnp.float32)
        kw = dict(stride=s.stride, padding=s.padding, output_padding=s.output_padding, groups=s.groups, dilation=s.dilation)
        f = lambda x, w: jtconv.conv_transpose(x, w, **kw)
        y = jax.eval_shape(f, x, w)
        c = jnp.zeros(y.shape, jnp.float32)
        g = lambda x, w, c: jax.value_and_grad(lambda x, w: jnp.sum(f(x, w) * c), (0, 1))(x, w)
        for name, prog, args in (("fwd", f, (x, w)), ("fwdbwd", g, (x, w, c))):
            text = jax.jit(prog).lower(*args).compile().as_text()
            text = re.sub(r", metadata=\{[^}]*\}", "", text)
            text = re.sub(r"%[\w.\-]+", "%v", text)
            text = "\n".join(l for l in text.splitlines() if not l.startswith("HloModule") and not re.match(r"^\d+ ", l))
            out[f"{s.name}/{name}"] = hashlib.sha256(text.encode()).hexdigest()[:12]
json.dump(out, open(sys.argv[2], "w"), indent=0)
