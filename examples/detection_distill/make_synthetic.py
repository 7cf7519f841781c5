"""Generate a synthetic COCO-format detection data set: coloured shapes on textured or plain backgrounds.

Three categories (rectangle, ellipse, triangle) of varied sizes (``--object-sizes``,
fractions of the image side), colours and aspect ratios, 1 to ``--max-objects``
per image, on images whose longer side is ``--size`` pixels (square, landscape
4:3 or portrait 3:4, so aspect-ratio grouping has work to do), over a
``--background`` that is textured (gradient, texture and noise: harder) or plain
(one colour, faint noise: what the demo uses). The layout is COCO's, with real COCO JSON (``bbox``,
``area``, ``iscrowd``, polygon ``segmentation``, ``categories``)::

    python -m examples.detection_distill.make_synthetic --out data/synthetic --train 128 --val 32 --size 160

writes ``data/synthetic/{train2017,val2017}/*.jpg`` and
``data/synthetic/annotations/instances_{train2017,val2017}.json``. The same
``--seed`` gives the same files; each image is seeded on its own, so the first
N images do not depend on how many are made.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

CATEGORIES = [
    {"id": 1, "name": "rectangle", "supercategory": "shape"},
    {"id": 2, "name": "ellipse", "supercategory": "shape"},
    {"id": 3, "name": "triangle", "supercategory": "shape"},
]
_ASPECTS = ((1, 1), (4, 3), (3, 4))  # width : height
_ELLIPSE_POINTS = 24  # polygon vertices of an ellipse outline
_MAX_IOU = 0.3  # reject placements that would hide most of an earlier shape
_PLACEMENT_TRIES = 20


def _plain_background(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """One random colour plus faint pixel noise, as uint8 ``(H, W, 3)``."""
    image = rng.uniform(0, 255, size=3) + rng.normal(0, 5, size=(height, width, 3))
    return np.clip(image, 0, 255).astype(np.uint8)


def _textured_background(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """A colour gradient plus low-frequency texture plus pixel noise, as uint8 ``(H, W, 3)``."""
    c0, c1 = rng.uniform(0, 255, size=(2, 3))
    angle = rng.uniform(0, 2 * math.pi)
    ys, xs = np.mgrid[0:height, 0:width]
    t = (xs * math.cos(angle) + ys * math.sin(angle)) / max(height, width)
    t = (t - t.min()) / max(t.max() - t.min(), 1e-6)
    image = c0 + t[..., None] * (c1 - c0)
    cells = rng.uniform(-40, 40, size=(height // 16 + 2, width // 16 + 2, 3))
    texture = np.stack(
        [np.asarray(Image.fromarray(cells[..., c].astype(np.float32), mode="F").resize((width, height), Image.BICUBIC)) for c in range(3)],
        axis=-1,
    )
    image = image + texture + rng.normal(0, 10, size=image.shape)
    return np.clip(image, 0, 255).astype(np.uint8)


def _shape_polygon(rng: np.random.Generator, category: int, box: tuple[float, float, float, float]) -> list[tuple[float, float]]:
    """Outline of a shape of ``category`` inscribed in ``box = (x0, y0, x1, y1)``, touching all four sides."""
    x0, y0, x1, y1 = box
    if category == 1:
        return [(x0, y0), (x1, y0), (x1, y1), (x0, y1)]
    if category == 2:
        cx, cy, rx, ry = (x0 + x1) / 2, (y0 + y1) / 2, (x1 - x0) / 2, (y1 - y0) / 2
        angles = np.linspace(0, 2 * math.pi, _ELLIPSE_POINTS, endpoint=False)
        return [(cx + rx * math.cos(a), cy + ry * math.sin(a)) for a in angles]
    # Triangle: apex on the top edge, base corners on the bottom edge, left and right.
    apex = x0 + rng.uniform(0.2, 0.8) * (x1 - x0)
    return [(apex, y0), (x1, y1), (x0, y1)]


def _polygon_area(points: list[tuple[float, float]]) -> float:
    """Shoelace formula."""
    xs, ys = np.array(points).T
    return float(abs(np.dot(xs, np.roll(ys, 1)) - np.dot(ys, np.roll(xs, 1))) / 2)


def _iou(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union


_BACKGROUNDS = {"textured": _textured_background, "plain": _plain_background}


def make_image(
    rng: np.random.Generator, size: int, max_objects: int, object_sizes: tuple[float, float] = (0.1, 0.5), background: str = "textured"
) -> tuple[Image.Image, list[dict[str, Any]]]:
    """One image and its objects as ``{"category_id", "polygon"}`` dicts (pixel coordinates).

    Object sides are drawn log-uniformly between ``object_sizes`` (fractions of
    ``size``; at least 12 pixels).
    """
    aw, ah = _ASPECTS[rng.integers(len(_ASPECTS))]
    width, height = (size, round(size * ah / aw)) if aw >= ah else (round(size * aw / ah), size)
    image = Image.fromarray(_BACKGROUNDS[background](rng, height, width))
    draw = ImageDraw.Draw(image)
    min_side, max_side = max(12.0, object_sizes[0] * size), object_sizes[1] * size
    boxes: list[tuple[float, ...]] = []
    objects = []
    for _ in range(rng.integers(1, max_objects + 1)):
        for _ in range(_PLACEMENT_TRIES):
            # Log-uniform sizes give a spread over COCO's small / medium ranges.
            side = math.exp(rng.uniform(math.log(min_side), math.log(max_side)))
            ratio = math.exp(rng.uniform(-0.5, 0.5))
            w, h = min(side * ratio, width - 2), min(side / ratio, height - 2)
            x0, y0 = rng.uniform(1, width - w - 1), rng.uniform(1, height - h - 1)
            box = (x0, y0, x0 + w, y0 + h)
            if all(_iou(box, other) <= _MAX_IOU for other in boxes):
                break
        else:
            continue  # no room left for another shape
        category = int(rng.integers(1, len(CATEGORIES) + 1))
        polygon = _shape_polygon(rng, category, box)
        colour = tuple(int(c) for c in rng.integers(0, 256, size=3))
        draw.polygon(polygon, fill=colour, outline=tuple(c // 2 for c in colour))
        boxes.append(box)
        objects.append({"category_id": category, "polygon": polygon})
    return image, objects


def make_split(
    out: Path, split: str, num_images: int, size: int, seed: int, split_index: int, max_objects: int,
    object_sizes: tuple[float, float] = (0.1, 0.5), background: str = "textured",
) -> Path:
    """Write ``num_images`` images of ``split`` and their ``annotations/instances_<split>.json``; returns the JSON path."""
    img_dir = out / split
    img_dir.mkdir(parents=True, exist_ok=True)
    images, annotations = [], []
    for index in range(num_images):
        rng = np.random.default_rng([seed, split_index, index])
        image, objects = make_image(rng, size, max_objects, object_sizes, background)
        image_id = index + 1
        file_name = f"{image_id:012d}.jpg"
        image.save(img_dir / file_name, quality=95)
        images.append({"id": image_id, "file_name": file_name, "width": image.width, "height": image.height})
        for obj in objects:
            xs, ys = [p[0] for p in obj["polygon"]], [p[1] for p in obj["polygon"]]
            annotations.append({
                "id": len(annotations) + 1,
                "image_id": image_id,
                "category_id": obj["category_id"],
                "bbox": [round(min(xs), 2), round(min(ys), 2), round(max(xs) - min(xs), 2), round(max(ys) - min(ys), 2)],
                "area": round(_polygon_area(obj["polygon"]), 2),
                "iscrowd": 0,
                "segmentation": [[round(v, 2) for p in obj["polygon"] for v in p]],
            })
    coco = {
        "info": {"description": f"fastssim synthetic shapes ({split}, seed {seed})", "version": "1.0"},
        "licenses": [],
        "images": images,
        "annotations": annotations,
        "categories": CATEGORIES,
    }
    ann_file = out / "annotations" / f"instances_{split}.json"
    ann_file.parent.mkdir(parents=True, exist_ok=True)
    ann_file.write_text(json.dumps(coco))
    return ann_file


def make_dataset(
    out: str | Path,
    num_train: int = 128,
    num_val: int = 32,
    size: int = 160,
    seed: int = 0,
    max_objects: int = 5,
    train_set: str = "train2017",
    val_set: str = "val2017",
    object_sizes: tuple[float, float] = (0.1, 0.5),
    background: str = "textured",
) -> Path:
    """Write both splits under ``out`` (see the module docstring); returns ``out``.

    ``object_sizes``: smallest and largest object side as fractions of ``size``;
    ``background``: ``"textured"`` (gradient, texture, noise) or ``"plain"`` (one colour, faint noise).
    """
    if size < 64:
        raise ValueError(f"--size must be >= 64 (objects are at least 12 pixels), got {size}")
    if num_train < 1 or num_val < 1:
        raise ValueError(f"--train and --val must be >= 1, got {num_train} and {num_val}")
    if max_objects < 1:
        raise ValueError(f"--max-objects must be >= 1, got {max_objects}")
    if not 0 < object_sizes[0] <= object_sizes[1] <= 1:
        raise ValueError(f"--object-sizes must satisfy 0 < smallest <= largest <= 1, got {tuple(object_sizes)}")
    if background not in _BACKGROUNDS:
        raise ValueError(f"--background must be one of {sorted(_BACKGROUNDS)}, got {background!r}")
    out = Path(out)
    # Distinct split indices keep the train and val images different for the same seed.
    make_split(out, train_set, num_train, size, seed, 0, max_objects, object_sizes, background)
    make_split(out, val_set, num_val, size, seed, 1, max_objects, object_sizes, background)
    return out


def get_args_parser() -> argparse.ArgumentParser:
    """Command-line interface of the generator."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="output root (COCO layout)")
    parser.add_argument("--train", type=int, default=128, help="training images (default: %(default)s)")
    parser.add_argument("--val", type=int, default=32, help="validation images (default: %(default)s)")
    parser.add_argument("--size", type=int, default=160, help="longer image side in pixels (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-objects", type=int, default=5, help="shapes per image, at most (default: %(default)s)")
    parser.add_argument("--object-sizes", type=float, nargs=2, default=(0.1, 0.5), metavar=("SMALLEST", "LARGEST"),
                        help="object sides as fractions of --size (default: %(default)s)")
    parser.add_argument("--background", default="textured", choices=sorted(_BACKGROUNDS), help="(default: %(default)s)")
    parser.add_argument("--train-set", default="train2017", help="training split name")
    parser.add_argument("--val-set", default="val2017", help="validation split name")
    return parser


def main(args: argparse.Namespace) -> Path:
    """Generate the data set described by ``args``."""
    out = make_dataset(
        args.out, args.train, args.val, args.size, args.seed, args.max_objects, args.train_set, args.val_set,
        tuple(args.object_sizes), args.background,
    )
    print(f"wrote {args.train} train and {args.val} val images to {out}")
    return out


if __name__ == "__main__":
    main(get_args_parser().parse_args())
