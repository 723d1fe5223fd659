"""The classic tutorial example, computed by jtconv and by PyTorch.

A 4×4 input of ones, a 4×4 kernel holding 1..16, stride 2, padding 1:
the output is 8×8, output (0, 0) is 6 and output (0, 1) is 12.
"""

import jax.numpy as jnp
import numpy as np

import jtconv

x = jnp.ones((1, 1, 4, 4))  # (N, C_in, H, W)
w = jnp.arange(1.0, 17.0).reshape(1, 1, 4, 4)  # (C_in, C_out, kH, kW), PyTorch layout
y = jtconv.conv_transpose2d(x, w, stride=2, padding=1)

print("jtconv output, shape", y.shape)
print(np.asarray(y[0, 0]).astype(int))

try:
    import torch
except ImportError:
    print("\ntorch is not installed: pip install 'jtconv[torch]' to compare with PyTorch")
else:
    y_torch = torch.nn.functional.conv_transpose2d(
        torch.tensor(np.asarray(x)), torch.tensor(np.asarray(w)), stride=2, padding=1
    ).numpy()
    np.testing.assert_array_equal(np.asarray(y), y_torch)
    print(
        f"\nequal to torch.nn.functional.conv_transpose2d (torch {torch.__version__}):",
        bool(np.array_equal(np.asarray(y), y_torch)),
    )
