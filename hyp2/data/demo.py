"""The embedded demo dataset: multi-label synthetic scenes generated from a fixed seed.

No files and no download: every image is drawn with numpy when the dataset is built (about a
second), identically on every machine. Each 32×32 image shows 1–4 of 8 classes — six coloured
shapes and two textures — on a noisy background. Label counts follow a VOC-like mix (a third of the
images carry a single label, so HyP²'s pair term, which only looks at samples with more than one
label, sees realistic batches), and some classes co-occur more often than others.

Protocol, VOC2007-style: train = database (2,000 images), query = 500 other images, mAP over the
whole database. Defaults chosen for a CPU (see ``DEFAULTS``); every CLI flag still applies.
"""
from __future__ import annotations

import numpy as np
from PIL import Image

from .base import DataOptions, LabelledImages, RetrievalData, image_transform, DATASETS

CLASSES = ("red_square", "green_disc", "blue_triangle", "yellow_cross", "magenta_ring",
           "cyan_bar", "stripes", "checker")
COLOURS = {"red_square": (220, 40, 40), "green_disc": (40, 200, 60), "blue_triangle": (50, 80, 230),
           "yellow_cross": (230, 220, 40), "magenta_ring": (210, 50, 210), "cyan_bar": (40, 210, 220)}
# Pairs that tend to appear together (like person+horse in VOC): a second label is drawn from the
# first's partner half the time.
PARTNER = {0: 1, 1: 0, 2: 6, 3: 4, 4: 3, 5: 7, 6: 2, 7: 5}
SIZE = 32
DEMO_SEED = 20220710  # fixed: the demo data never changes with --seed
NUM_TRAIN, NUM_QUERY = 2000, 500

DEFAULTS = {"backbone": "small", "epochs": 15, "batch_size": 50,
            "eval_every": 1, "pretrained": False, "workers": 0}


def generate(num_images: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Draw ``num_images`` scenes. Returns images (N, 32, 32, 3) uint8 and labels (N, 8) uint8."""
    rng = np.random.default_rng(seed)
    images = np.empty((num_images, SIZE, SIZE, 3), np.uint8)
    labels = np.zeros((num_images, len(CLASSES)), np.uint8)
    yy, xx = np.mgrid[0:SIZE, 0:SIZE]
    for n in range(num_images):
        chosen = _draw_labels(rng)
        labels[n, chosen] = 1
        img = rng.normal(rng.uniform(70, 130), 12, (SIZE, SIZE, 1)).repeat(3, axis=2)
        # Textures first (they are backgrounds), shapes on top in random order.
        for c in sorted(chosen, key=lambda c: (c < 6, rng.random())):
            _draw(img, CLASSES[c], rng, yy, xx)
        images[n] = np.clip(img, 0, 255).astype(np.uint8)
    return images, labels


def _draw_labels(rng: np.random.Generator) -> list[int]:
    k = int(rng.choice([1, 2, 3, 4], p=[0.35, 0.35, 0.2, 0.1]))
    chosen = [int(rng.integers(len(CLASSES)))]
    while len(chosen) < k:
        c = PARTNER[chosen[0]] if rng.random() < 0.5 else int(rng.integers(len(CLASSES)))
        if c not in chosen:
            chosen.append(c)
    return chosen


def _draw(img: np.ndarray, name: str, rng: np.random.Generator, yy: np.ndarray, xx: np.ndarray) -> None:
    if name == "stripes":  # horizontal light stripes over a random half of the canvas
        rows = (yy % 4 < 2) & ((xx < SIZE // 2) if rng.random() < 0.5 else (xx >= SIZE // 2))
        img[rows] = 200
        return
    if name == "checker":  # a dark/light checkerboard over a random quadrant
        qy, qx = rng.integers(2, size=2) * (SIZE // 2)
        region = (yy >= qy) & (yy < qy + SIZE // 2) & (xx >= qx) & (xx < qx + SIZE // 2)
        img[region] = np.where(((yy[region] // 3 + xx[region] // 3) % 2)[:, None] == 0, 20, 235)
        return
    r = int(rng.integers(4, 7))
    cy, cx = rng.integers(r, SIZE - r, size=2)
    dy, dx = np.abs(yy - cy), np.abs(xx - cx)
    if name == "red_square":
        mask = (dy <= r) & (dx <= r)
    elif name == "green_disc":
        mask = dy * dy + dx * dx <= r * r
    elif name == "blue_triangle":
        mask = (dy <= r) & (dx <= (yy - cy + r) / 2)
    elif name == "yellow_cross":
        mask = ((dy <= 1) & (dx <= r)) | ((dx <= 1) & (dy <= r))
    elif name == "magenta_ring":
        d2 = dy * dy + dx * dx
        mask = (d2 <= r * r) & (d2 >= (r - 2) ** 2)
    else:  # cyan_bar
        mask = (dx <= r + 3) & (dy <= 1)
    img[mask] = np.asarray(COLOURS[name], np.float64) * rng.uniform(0.85, 1.0)


class _ArrayImages:
    """Picklable loader: item ``i`` of a uint8 (N, H, W, 3) array as a PIL image."""

    def __init__(self, images: np.ndarray):
        self.images = images

    def __call__(self, i: int) -> Image.Image:
        return Image.fromarray(self.images[i])


@DATASETS.register("demo", "synthetic multi-label shapes, generated in memory (no download)", defaults=DEFAULTS)
def build(options: DataOptions) -> RetrievalData:
    images, labels = generate(NUM_TRAIN + NUM_QUERY, DEMO_SEED)
    ids = [f"demo/{i:05d}" for i in range(len(images))]
    train_load = _ArrayImages(images[:NUM_TRAIN])
    query_load = _ArrayImages(images[NUM_TRAIN:])
    size = options.image_size
    train = LabelledImages(ids[:NUM_TRAIN], labels[:NUM_TRAIN], train_load, image_transform(size, True))
    database = train.with_transform(image_transform(size, False))
    query = LabelledImages(ids[NUM_TRAIN:], labels[NUM_TRAIN:], query_load, image_transform(size, False))
    provenance = {"lists": f"generated in memory from the fixed seed {DEMO_SEED}",
                  "split": f"the first {NUM_TRAIN} images = train = database, the next {NUM_QUERY} the queries"}
    return RetrievalData("demo", CLASSES, train, query, database, topk=None, provenance=provenance)
