"""Triton kernels for Gaussian-windowed SSIM (installed as ``fastssim.kernels``).

Kernels and their launchers only: no autograd and no argument checking, which live in
``fastssim``. Importing this package needs Triton.
"""
