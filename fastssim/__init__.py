"""fastssim: fast, exact SSIM for PyTorch and structural knowledge distillation.

Public API:
    ssim, ssim_loss               -- functional SSIM and SSIM loss
    ms_ssim                       -- multi-scale SSIM (as pytorch-msssim)
    ssim3d                        -- SSIM of (N, C, D, H, W) volumes
    SSIMLoss, SSIMDistillLoss     -- modules (the latter is the paper's FPN feature loss)
    FeatureDistillLoss            -- base of the multi-level feature losses (adapters, weights, lambda)
    FeatureImitationLoss          -- the L2/L1 feature imitation that SSIM replaces
    min_max_normalize             -- the paper's psi, with selectable scope
    available_backends            -- which backends can run here ("torch", "triton")
    reference                     -- the pure-PyTorch implementation used as ground truth
    compat                        -- drop-ins for pytorch-msssim, kornia and fused-ssim
"""
from . import compat, reference
from ._dispatch import available_backends
from .feature_loss import FeatureDistillLoss, FeatureImitationLoss
from .functional import ssim, ssim_loss
from .modules import SSIMDistillLoss, SSIMLoss
from .multiscale import ms_ssim
from .volumetric import ssim3d
from .normalize import min_max_normalize

__all__ = ["ssim", "ssim_loss", "ms_ssim", "ssim3d", "SSIMLoss", "SSIMDistillLoss", "FeatureDistillLoss",
           "FeatureImitationLoss", "min_max_normalize", "available_backends", "reference", "compat"]
__version__ = "0.1.0"
