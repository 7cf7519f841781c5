"""Drop-in replacements for other SSIM libraries, computed by fastssim.

Change one import and keep the rest of the code:

- ``fastssim.compat.pytorch_msssim``: ``ssim``, ``ms_ssim``, ``SSIM``, ``MS_SSIM``;
- ``fastssim.compat.kornia``: ``ssim``, ``ssim3d``, ``SSIM``, ``SSIM3D`` (``kornia.metrics``)
  and ``ssim_loss``, ``ssim3d_loss``, ``SSIMLoss``, ``SSIM3DLoss`` (``kornia.losses``);
- ``fastssim.compat.fused_ssim``: ``fused_ssim``, ``fused_ssim3d``.

Each function takes its peer's arguments, order and defaults and returns its numbers; each
module's docstring lists what it reproduces and where it deliberately differs.
"""
from . import fused_ssim, kornia, pytorch_msssim

__all__ = ["fused_ssim", "kornia", "pytorch_msssim"]
