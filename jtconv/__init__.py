"""jtconv: PyTorch-exact transposed convolution for JAX.

>>> import jtconv
>>> y = jtconv.conv_transpose2d(x, w, stride=2, padding=1)   # like torch.nn.functional
"""

from jtconv.functional import conv_transpose, conv_transpose1d, conv_transpose2d, conv_transpose3d
from jtconv.geometry import ConvTransposeGeometry, make_geometry, output_padding_for_size, output_size
from jtconv.lowering import ALGORITHMS, choose_algorithm

__version__ = "0.1.0"

__all__ = [
    "ALGORITHMS",
    "ConvTransposeGeometry",
    "choose_algorithm",
    "conv_transpose",
    "conv_transpose1d",
    "conv_transpose2d",
    "conv_transpose3d",
    "make_geometry",
    "output_padding_for_size",
    "output_size",
]
