"""fastssim: fast, exact SSIM for PyTorch and structural knowledge distillation.

Public API:
    ssim, ssim_loss               -- functional SSIM and SSIM loss
    SSIMLoss, SSIMDistillLoss     -- modules (the latter is the paper's FPN feature loss)
    min_max_normalize             -- the paper's psi, with selectable scope
    available_backends            -- which backends can run here ("torch", "triton")
    reference                     -- the pure-PyTorch implementation used as ground truth
"""
from . import reference
from ._dispatch import available_backends
from .functional import ssim, ssim_loss
from .modules import SSIMDistillLoss, SSIMLoss
from .normalize import min_max_normalize

__all__ = ["ssim", "ssim_loss", "SSIMLoss", "SSIMDistillLoss", "min_max_normalize",
           "available_backends", "reference"]
__version__ = "0.1.0"
