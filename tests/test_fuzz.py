"""Property-based fuzzing of ``fastssim.ssim`` against an independent float64 oracle.

Random shapes (1-wide sides, sizes at the window's limit), settings, dtypes, layouts and
reductions on both backends (Triton through the interpreter on the CPU, tiny shapes, few
examples). Every call either raises ``TypeError``/``ValueError`` naming an argument, or
matches the oracle: the value, and the gradients of a random weighting of it with respect
to both inputs.

The oracle is written apart from the library: it takes every window from ``F.unfold``,
forms the two-pass (mean first, then centred) weighted moments in float64, and the
SSIM factors directly. Half inputs are compared with it on the same rounded values.
Tolerances: SSIM 1e-9 absolute for float64; otherwise (statistics in float32) 1e-5 or,
where larger, 4 eps32 / k2^2 (2.7e-4 at k2 = 0.03): the float32 variance ``E[x^2] - mu^2``
is only exact to about eps32 data_range^2, which a near-flat window divides by
``C2 = (k2 data_range)^2``; contrast or structure alone take the square root of that
variance, which amplifies its error where it is near 0 (a window of sigma 0.3 is almost
one pixel): 1e-3 there;
gradients relative to their largest entry 1e-7 for float64, 1e-4 for float32, 2e-3 for
float16 and 1e-2 for bfloat16 (gradients are stored in the input dtype; 1e-2 for the
square-root components below float64), the largest entry
taken as at least 1e-4 / data_range (1e-10 for float64) where the gradient vanishes.

Inputs are correlated but never equal (at x == y the exact gradient is 0 and only
rounding is left to compare). Examples are derandomised (the same on every run) so CI is reproducible.
"""
import re

import pytest
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, Phase, given, settings, strategies as st

import fastssim
from fastssim._dispatch import available_backends
from fastssim._options import PADDINGS, REDUCTIONS, SSIMSettings

FLOAT32_EPS = 2.0 ** -24
GRAD_TOL = {torch.float64: 1e-7, torch.float32: 1e-4, torch.float16: 2e-3, torch.bfloat16: 1e-2}
# Floor of the gradient scale, times 1 / data_range: where the exact gradient vanishes
# (x == y is SSIM's maximum) what remains is the rounding of cancelling terms of order
# 1 / (k2^2 data_range), about 1e3 / data_range.
GRAD_FLOOR = {torch.float64: 1e-10, torch.float32: 1e-4, torch.float16: 1e-4, torch.bfloat16: 1e-4}
COMPONENTS = ["lcs", "l", "c", "s", "cs", "lc", "ls"]
LAYOUTS = ["contiguous", "channels_last", "transposed", "strided"]
# Words a refusal must contain: the argument it is about.
ARGUMENT_NAMES = ("x", "y", "input", "window_size", "sigma", "data_range", "k1", "k2", "padding",
                  "components", "reduction", "backend")

# No shrinking: a failure is reported as drawn (shrinking through the interpreter takes minutes).
FUZZ = dict(derandomize=True, deadline=None, database=None, phases=[Phase.explicit, Phase.generate],
            suppress_health_check=[HealthCheck.too_slow])


def oracle(x: torch.Tensor, y: torch.Tensor, s: SSIMSettings, reduction: str) -> torch.Tensor:
    """SSIM in float64 from explicit windows; differentiable through autograd."""
    k, r = s.window_size, s.radius
    coords = torch.arange(k, dtype=torch.float64) - r
    g = torch.exp(-coords * coords / (2 * s.sigma * s.sigma))
    weights = torch.outer(g, g).flatten() / g.sum() ** 2
    if s.padding != "valid":
        mode = "reflect" if s.padding == "reflect" else "constant"
        x, y = F.pad(x, (r, r, r, r), mode=mode), F.pad(y, (r, r, r, r), mode=mode)
    n, c, h, w = x.shape
    out_h, out_w = h - k + 1, w - k + 1
    # (N, C, k*k, L): every window's pixels.
    px = F.unfold(x, k).view(n, c, k * k, -1)
    py = F.unfold(y, k).view(n, c, k * k, -1)
    wt = weights.view(1, 1, -1, 1)
    mu_x, mu_y = (wt * px).sum(2), (wt * py).sum(2)
    dx, dy = px - mu_x.unsqueeze(2), py - mu_y.unsqueeze(2)
    var_x, var_y, cov = (wt * dx * dx).sum(2), (wt * dy * dy).sum(2), (wt * dx * dy).sum(2)
    c1, c2 = (s.k1 * s.data_range) ** 2, (s.k2 * s.data_range) ** 2
    value = torch.ones_like(mu_x)
    if "l" in s.components:
        value = value * (2 * mu_x * mu_y + c1) / (mu_x ** 2 + mu_y ** 2 + c1)
    if "c" in s.components and "s" in s.components:
        value = value * (2 * cov + c2) / (var_x + var_y + c2)
    else:
        eps = 1e-6 * c2  # the documented square-root guard
        sd_x, sd_y = (var_x.clamp_min(0) + eps).sqrt(), (var_y.clamp_min(0) + eps).sqrt()
        if "c" in s.components:
            value = value * (2 * sd_x * sd_y + c2) / (var_x + var_y + c2)
        if "s" in s.components:
            value = value * (cov + c2 / 2) / (sd_x * sd_y + c2 / 2)
    value = value.view(n, c, out_h, out_w)
    if reduction == "none":
        return value
    per_channel = value.mean(dim=(-2, -1))
    return {"channel": per_channel, "sample": per_channel.mean(1), "mean": per_channel.mean()}[reduction]


def _layout(t: torch.Tensor, layout: str) -> torch.Tensor:
    """The same values in another memory layout."""
    if layout == "channels_last":
        return t.contiguous(memory_format=torch.channels_last)
    if layout == "transposed":
        return t.transpose(-1, -2).contiguous().transpose(-1, -2)
    if layout == "strided":
        return torch.stack((t, torch.zeros_like(t)), dim=-1)[..., 0]
    return t


@st.composite
def cases(draw, backend: str, max_side: int, windows: list[int]):
    window_size = draw(st.sampled_from(windows))
    r = window_size // 2
    # A third of the sides at the window's limits (1, r, r + 1, k - 1, k, k + 1), which the
    # paddings accept or refuse; the rest large enough for every padding.
    limits = st.sampled_from(sorted({1, r, r + 1, window_size - 1, window_size, window_size + 1}))
    fitting = st.integers(window_size, max(window_size, max_side))
    side = st.one_of(limits, fitting, fitting)
    shape = (draw(st.integers(1, 2)), draw(st.integers(1, 3)), draw(side), draw(side))
    data_range = draw(st.sampled_from([1.0, 255.0, 0.01]))
    kwargs = dict(window_size=window_size,
                  sigma=draw(st.sampled_from([0.3, 1.0, 1.5, 4.0, 1e200])),
                  data_range=data_range,
                  k1=draw(st.sampled_from([0.01, 0.05])), k2=draw(st.sampled_from([0.03, 0.1])),
                  padding=draw(st.sampled_from(PADDINGS)), components=draw(st.sampled_from(COMPONENTS)),
                  reduction=draw(st.sampled_from(REDUCTIONS)), backend=backend)
    dtypes = [torch.float32, torch.float16, torch.bfloat16] + ([torch.float64] if backend == "torch" else [])
    return (shape, kwargs, draw(st.sampled_from(dtypes)), draw(st.sampled_from(LAYOUTS)),
            draw(st.floats(0.05, 0.9)), draw(st.integers(0, 2 ** 16)))


def _check(case) -> None:
    shape, kwargs, dtype, layout, noise, seed = case
    gen = torch.Generator().manual_seed(seed)
    base = torch.rand(shape, generator=gen, dtype=torch.float64)
    other = (1 - noise) * base + noise * torch.rand(shape, generator=gen, dtype=torch.float64)
    x = _layout((base * kwargs["data_range"]).to(dtype), layout).requires_grad_()
    y = _layout((other * kwargs["data_range"]).to(dtype), layout).requires_grad_()
    try:
        out = fastssim.ssim(x, y, **kwargs)
    except (TypeError, ValueError) as exc:
        named = [name for name in ARGUMENT_NAMES if re.search(rf"\b{name}\b", str(exc))]
        assert named, f"refusal names no argument: {exc}"
        return
    settings_ = SSIMSettings(**{k: v for k, v in kwargs.items() if k not in ("reduction", "backend")})
    x64 = x.detach().double().requires_grad_()
    y64 = y.detach().double().requires_grad_()
    expected = oracle(x64, y64, settings_, kwargs["reduction"])
    assert out.shape == expected.shape
    assert out.dtype == (torch.float64 if dtype == torch.float64 else torch.float32)
    square_root = kwargs["components"] in ("c", "s", "lc", "ls")
    value_tol = (1e-9 if dtype == torch.float64 else 1e-3 if square_root
                 else max(1e-5, 4 * FLOAT32_EPS / kwargs["k2"] ** 2))
    grad_tol = max(GRAD_TOL[dtype], 1e-2 if square_root and dtype != torch.float64 else 0)
    assert (out.double() - expected).abs().max().item() < value_tol
    weights = torch.rand(expected.shape, generator=gen, dtype=torch.float64)
    (out.double() * weights).sum().backward()
    (expected * weights).sum().backward()
    for got, want, name in ((x.grad, x64.grad, "x"), (y.grad, y64.grad, "y")):
        assert got.dtype == dtype and got.shape == want.shape
        scale = max(want.abs().max().item(), GRAD_FLOOR[dtype] / kwargs["data_range"])
        err = (got.double() - want).abs().max().item() / scale
        assert err < grad_tol, f"d{name}: relative error {err:.2e}"


@settings(max_examples=80, **FUZZ)
@given(cases(backend="torch", max_side=20, windows=[3, 5, 7, 11]))
def test_reference_matches_oracle_or_refuses(case):
    _check(case)


@pytest.mark.skipif("triton" not in available_backends(), reason="Triton cannot run here")
@settings(max_examples=12, **FUZZ)
@given(cases(backend="triton", max_side=9, windows=[3, 5]))
def test_triton_matches_oracle_or_refuses(case):
    _check(case)
