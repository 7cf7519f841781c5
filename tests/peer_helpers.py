"""Comparison helpers for the tests of fastssim against other SSIM libraries (and oracles)."""
import torch


def values_and_grads(fn, x, y, need=("x", "y"), seed=0):
    """``fn(x, y)`` on fresh leaf copies, and the gradients of a random weighting of its output.

    Returns ``(output, dx, dy)``; a gradient is ``None`` for an input not in ``need`` or one
    that ``fn`` gives no gradient.
    """
    x = x.detach().clone().requires_grad_("x" in need)
    y = y.detach().clone().requires_grad_("y" in need)
    out = fn(x, y)
    gen = torch.Generator().manual_seed(seed)
    weights = torch.rand(out.shape, generator=gen, dtype=torch.float64).to(out.device)
    if out.requires_grad:
        (out.double() * weights).sum().backward()
    return out.detach(), x.grad, y.grad


def assert_matches(ours, theirs, atol=1e-5, grad_rtol=1e-4, check_dtype=True):
    """Outputs of :func:`values_and_grads` agree: values to ``atol``, gradients to ``grad_rtol``
    relative to the largest entry of ``theirs``; shapes (and dtypes) equal."""
    assert ours[0].shape == theirs[0].shape
    if check_dtype:
        assert ours[0].dtype == theirs[0].dtype
    err = (ours[0].double() - theirs[0].double()).abs().max().item()
    assert err <= atol, f"values differ by {err:.2e}"
    for name, mine, ref in (("x", ours[1], theirs[1]), ("y", ours[2], theirs[2])):
        if ref is None:
            assert mine is None, f"d{name} should not be computed"
            continue
        # An all-zero reference gradient (e.g. every scale clamped) must be matched exactly.
        scale = ref.double().abs().max().clamp_min(torch.finfo(torch.float64).tiny)
        rel = ((mine.double() - ref.double()).abs().max() / scale).item()
        assert rel <= grad_rtol, f"d{name}: relative error {rel:.2e}"
