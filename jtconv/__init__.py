"""jtconv: PyTorch-exact transposed convolution for JAX.

>>> import jtconv
>>> y = jtconv.conv_transpose2d(x, w, stride=2, padding=1)   # like torch.nn.functional
"""

from jtconv.functional import conv_transpose, conv_transpose1d, conv_transpose2d, conv_transpose3d
from jtconv.geometry import ConvTransposeGeometry, make_geometry, output_padding_for_size, output_size
from jtconv.initializers import bilinear_upsampling_init
from jtconv.lowering.plan import Plan
from jtconv.plans.estimate import ALGORITHMS
from jtconv.plans.layer_plans import candidate_plans, plan_for
from jtconv.plans.resolve import planning, set_planning
from jtconv.plans.wisdom import export_wisdom, forget_wisdom, import_wisdom
from jtconv.version import __version__ as __version__

# Imported on first use: most pull in Flax (and torch, when called).
_LAZY = {
    "from_torch": "jtconv.interop",
    "to_torch": "jtconv.interop",
    "linen": "jtconv.linen",
    "nnx": "jtconv.nnx",
    "onnx": "jtconv.onnx",
    "state_dict": "jtconv.state_dict",
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        module = importlib.import_module(_LAZY[name])
        return module if module.__name__ == f"jtconv.{name}" else getattr(module, name)
    raise AttributeError(f"module 'jtconv' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*__all__, *_LAZY, "__version__"})


__all__ = [
    "ALGORITHMS",
    "ConvTransposeGeometry",
    "Plan",
    "bilinear_upsampling_init",
    "candidate_plans",
    "conv_transpose",
    "conv_transpose1d",
    "conv_transpose2d",
    "conv_transpose3d",
    "export_wisdom",
    "forget_wisdom",
    "from_torch",
    "import_wisdom",
    "make_geometry",
    "output_padding_for_size",
    "output_size",
    "plan_for",
    "planning",
    "set_planning",
    "to_torch",
]
