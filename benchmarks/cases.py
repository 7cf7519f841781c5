"""Benchmark cases: the tensor shapes each implementation is timed on.

A case is a list of NCHW level shapes. Multi-level cases model one training
step of feature distillation on a detector's FPN outputs (every level of the
step is measured together); single-level cases are one large map each.

Case names accepted by :func:`resolve_cases`:

- ``fpn_b<B>`` / ``fpn_b<B>_c<C>``: the five Faster R-CNN FPN levels of an
  800x1344 input (200x336, 100x168, 50x84, 25x42, 13x21), batch B, C channels
  (256 when not given, as in torchvision's FPN).
- ``NxCxHxW``: one map of that shape, e.g. ``8x64x256x256``.
- a group name from :data:`GROUPS`, which expands to several cases.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

Shape = tuple[int, int, int, int]

#: COCO's usual training size after torchvision's GeneralizedRCNNTransform.
FPN_INPUT_HW: tuple[int, int] = (800, 1344)
#: torchvision's FPN width.
FPN_CHANNELS = 256


@dataclass(frozen=True)
class Case:
    """A named list of NCHW level shapes that one loss call covers."""

    name: str
    shapes: tuple[Shape, ...]

    @property
    def elements(self) -> int:
        """Elements per input tensor, summed over the levels."""
        return sum(math.prod(s) for s in self.shapes)


def fpn_level_sizes(height: int, width: int) -> list[tuple[int, int]]:
    """Spatial sizes of the five FPN outputs (P2..P5 and 'pool') of a ResNet.

    Every stride-2 stage of a ResNet (7x7 stem conv, 3x3 max-pool, 3x3 convs,
    all padded) gives ceil(size / 2), and the extra 'pool' level is a stride-2
    max-pool of P5, so the sizes are repeated ceiling halvings.
    """
    h, w = height, width
    sizes = []
    for stage in range(6):
        h, w = math.ceil(h / 2), math.ceil(w / 2)
        if stage >= 1:  # stride 4 (P2) and coarser
            sizes.append((h, w))
    return sizes


def fpn_case(batch: int, channels: int = FPN_CHANNELS) -> Case:
    """The FPN level set at :data:`FPN_INPUT_HW` for ``batch`` images."""
    name = f"fpn_b{batch}" if channels == FPN_CHANNELS else f"fpn_b{batch}_c{channels}"
    shapes = tuple((batch, channels, h, w) for h, w in fpn_level_sizes(*FPN_INPUT_HW))
    return Case(name, shapes)


def map_case(shape: Shape) -> Case:
    """A single-map case named after its shape, e.g. ``8x64x256x256``."""
    return Case("x".join(str(d) for d in shape), (shape,))


def _square_maps(batch: int, channels: int, sides: Sequence[int]) -> list[str]:
    return [map_case((batch, channels, s, s)).name for s in sides]


#: Named groups of cases. The sweeps use one geometric series of square maps
#: so that time against elements is one line per implementation; the GPU sweep
#: reaches the size of the batch-8 FPN set (183 M elements), the CPU one stays
#: small enough for a 2-core machine.
GROUPS: dict[str, list[str]] = {
    "large": ["8x64x256x256", "1x3x1080x1920", "5x5x1080x1920"],
    "sweep": _square_maps(2, 16, [32, 64, 128, 256, 512, 1024, 2048]),
    "sweep_small": _square_maps(2, 16, [16, 32, 64, 128]),
}

#: What ``python -m benchmarks.run`` measures when ``--cases`` is not given.
DEFAULT_CASES: dict[str, list[str]] = {
    "cuda": ["fpn_b2", "fpn_b8", "large", "sweep"],
    # Same level geometry as fpn_b2 with 8 channels: 0.7 M elements, so the
    # CPU run (reference and peers only) stays within about a minute.
    "cpu": ["fpn_b1_c8", "sweep_small"],
}
#: ``--quick``: tiny shapes that still keep every FPN level larger than the
#: 11x11 window (kornia's reflect padding needs each side > 5).
QUICK_CASES: list[str] = ["fpn_b1_c1", "1x2x32x32", "1x2x64x64"]

_FPN_RE = re.compile(r"fpn_b(\d+)(?:_c(\d+))?")
_MAP_RE = re.compile(r"(\d+)x(\d+)x(\d+)x(\d+)")
CASE_SYNTAX = (
    "fpn_b<B> or fpn_b<B>_c<C> (e.g. fpn_b2, fpn_b8), NxCxHxW (e.g. 8x64x256x256), "
    f"or a group: {', '.join(GROUPS)}"
)


def parse_case(name: str) -> Case:
    """Build one case from its name (no groups).

    Raises:
        ValueError: naming ``--cases`` and the accepted forms when ``name``
            matches none of them or has a zero dimension.
    """
    fpn = _FPN_RE.fullmatch(name)
    if fpn:
        batch, channels = int(fpn.group(1)), int(fpn.group(2) or FPN_CHANNELS)
        case = fpn_case(batch, channels)
    else:
        dims = _MAP_RE.fullmatch(name)
        if not dims:
            raise ValueError(f"--cases: unknown case {name!r}; choose from {CASE_SYNTAX}")
        case = map_case(tuple(int(d) for d in dims.groups()))  # type: ignore[arg-type]
    if any(d == 0 for s in case.shapes for d in s):
        raise ValueError(f"--cases: case {name!r} has a zero dimension")
    return case


def resolve_cases(names: Sequence[str]) -> list[Case]:
    """Expand groups and parse every name, keeping order and dropping repeats."""
    flat: list[str] = []
    for name in names:
        flat.extend(GROUPS.get(name, [name]))
    cases: dict[str, Case] = {}
    for name in flat:
        case = parse_case(name)
        cases.setdefault(case.name, case)
    return list(cases.values())
