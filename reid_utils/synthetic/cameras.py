"""The six cameras of the synthetic sample, and :func:`render_person`: a pedestrian in a camera.

Cameras differ in background (street, corridor, park, brick wall, glass front, bicycles),
illumination (brightness, contrast, colour cast), sensor noise, blur, the size and position of
the people in the frame, and mirroring (the walking direction). A :class:`View` adds the
per-image variation: front or back, walking phase, framing jitter, light, an occasional object
hiding the feet, and the noise seed. Everything is deterministic given the view.
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from .pedestrian import FEET_Y, RGB, SUPERSAMPLE, UNIT_H, UNIT_W, Appearance, body_height, draw_person

NUM_CAMERAS = 6


@dataclass(frozen=True)
class Camera:
    """How one camera sees the scene (a fixed table, :data:`CAMERAS`)."""

    wall: RGB
    ground: RGB
    horizon: float  # unit y of the wall/ground line
    props: str  # kind of background objects
    gain: tuple[float, float, float]  # per-channel illumination
    brightness: float
    contrast: float
    noise: float  # Gaussian noise sigma (0-255 scale)
    blur: float  # Gaussian blur radius in output pixels
    scale: float  # person size
    dx: float  # person position (unit px)
    dy: float
    mirror: bool  # people walk the other way (the image is mirrored)
    quality: int  # JPEG quality


CAMERAS: tuple[Camera, ...] = (
    # wall, ground, horizon, props, gain, brightness, contrast, noise, blur, scale, dx, dy, mirror, quality
    Camera((188, 196, 204), (150, 148, 144), 78, "posts", (1.04, 1.0, 0.94), 10, 1.0, 3.0, 0.0, 1.0, 0, 0, False, 88),
    Camera((92, 72, 58), (120, 112, 100), 84, "doors", (0.92, 0.9, 1.0), -22, 0.9, 4.0, 0.3, 0.92, 3, -2, True, 85),
    Camera((70, 112, 60), (112, 150, 84), 74, "bushes", (1.0, 1.06, 0.94), 14, 1.12, 3.0, 0.0, 1.04, -3, 0, False, 90),
    Camera((150, 74, 56), (132, 128, 124), 80, "bricks", (1.06, 0.98, 0.94), 0, 1.0, 3.5, 0.2, 0.9, 4, -3, True, 86),
    Camera((96, 116, 140), (70, 72, 78), 82, "windows", (0.9, 0.98, 1.1), -8, 0.85, 5.0, 0.0, 0.96, -2, 1, False, 84),
    Camera((204, 186, 130), (160, 150, 120), 76, "bikes", (1.1, 1.02, 0.82), 4, 0.95, 3.5, 0.5, 0.98, 1, -1, True, 87),
)


@dataclass(frozen=True)
class View:
    """One image of a person: camera and per-image variation."""

    camid: int | None  # 0-based; None: plain grey background, no light, no noise
    back: bool = False  # seen from behind
    mirror: bool = False
    scale: float = 1.0
    dx: float = 0.0  # unit px
    dy: float = 0.0
    phase: float = 0.0  # walking phase (radians)
    bg_shift: int = 0  # unit px along the camera's background
    light: float = 1.0  # brightness factor
    occluder: float = 0.0  # height of an object hiding the bottom, fraction of the image
    noise_seed: int = 0


def sample_view(rng: np.random.Generator, camid: int) -> View:
    """Draw one image's view through camera ``camid`` (0-based)."""
    cam = CAMERAS[camid]
    return View(
        camid=camid,
        back=bool(rng.random() < 0.45),
        mirror=cam.mirror != bool(rng.random() < 0.2),
        scale=cam.scale * float(rng.uniform(0.93, 1.06)),
        dx=cam.dx + float(rng.uniform(-3, 3)),
        dy=cam.dy + float(rng.uniform(-2, 2)),
        phase=float(rng.uniform(0, 2 * math.pi)),
        bg_shift=int(rng.integers(0, UNIT_W)),
        light=float(rng.uniform(0.88, 1.12)),
        occluder=float(rng.uniform(0.08, 0.2)) if rng.random() < 0.06 else 0.0,
        noise_seed=int(rng.integers(2**31)),
    )


def render_person(appearance: Appearance | None, view: View, height: int = 128, width: int = 64) -> Image.Image:
    """Draw ``appearance`` (None: background only) as seen in ``view``; an RGB ``width x height`` image."""
    size = (UNIT_W * SUPERSAMPLE, UNIT_H * SUPERSAMPLE)
    if view.camid is None:
        canvas = Image.new("RGB", size, (150, 150, 150))
    else:
        canvas = _background(view.camid, view.bg_shift).copy()
    if appearance is not None:
        scale = view.scale
        if scale <= 1.2:  # a framed pedestrian keeps the head in the picture (distractor crops may not)
            scale = min(scale, (FEET_Y + view.dy - 2.0) / body_height(appearance))
        draw_person(canvas, appearance, back=view.back, phase=view.phase, scale=scale, dx=view.dx, dy=view.dy,
                    mirror=view.mirror)
    if view.occluder > 0 and view.camid is not None:
        top = round(size[1] * (1 - view.occluder))
        shade = tuple(int(v * 0.6) for v in CAMERAS[view.camid].ground)
        ImageDraw.Draw(canvas).rectangle((0, top, size[0], size[1]), fill=shade)
    if (width, height) == (UNIT_W, UNIT_H):
        image = canvas.reduce(SUPERSAMPLE)  # box filter: the anti-aliasing of the supersampling
    else:
        image = canvas.resize((width, height), Image.Resampling.LANCZOS)
    if view.camid is None:
        return image
    return _camera_effects(image, CAMERAS[view.camid], view)


# ---------------------------------------------------------------------------------------------
# Backgrounds and image effects


@functools.lru_cache(maxsize=NUM_CAMERAS)
def _panorama(camid: int) -> Image.Image:
    """A camera's background, twice as wide as one image (crops of it vary per image)."""
    cam = CAMERAS[camid]
    s = SUPERSAMPLE
    w, h = 2 * UNIT_W, UNIT_H
    rng = np.random.default_rng(1000 + camid)  # fixed scenery, independent of the dataset seed
    image = Image.new("RGB", (w * s, h * s), cam.wall)
    draw = ImageDraw.Draw(image)

    def box(x0, y0, x1, y1, fill):
        draw.rectangle((x0 * s, y0 * s, x1 * s, y1 * s), fill=tuple(int(v) for v in fill))

    ground = np.array(cam.ground)
    for i in range(8):  # ground gets darker towards the bottom
        y0 = cam.horizon + (h - cam.horizon) * i / 8
        box(0, y0, w, y0 + (h - cam.horizon) / 8 + 1, ground * (1.05 - 0.03 * i))
    wall = np.array(cam.wall)
    if cam.props == "posts":
        for x in rng.uniform(0, w, 5):
            box(x, 8, x + 2.5, cam.horizon + 4, (60, 60, 66))
        for x in range(0, w, 12):
            box(x, cam.horizon + 30, x + 6, cam.horizon + 34, (214, 214, 210))
    elif cam.props == "doors":
        for x in rng.uniform(0, w - 20, 3):
            box(x, 20, x + 18, cam.horizon, wall * 0.6)
        for y in range(int(cam.horizon) + 6, h, 8):
            box(0, y, w, y + 0.8, ground * 0.8)
    elif cam.props == "bushes":
        for x, y in zip(rng.uniform(-10, w, 9), rng.uniform(30, cam.horizon, 9)):
            d = rng.uniform(14, 26)
            fill = tuple(int(v) for v in wall * rng.uniform(0.6, 1.2))
            draw.ellipse((x * s, y * s, (x + d) * s, (y + d * 0.7) * s), fill=fill)
    elif cam.props == "bricks":
        for row, y in enumerate(range(0, int(cam.horizon), 6)):
            for x in range(-6 * (row % 2), w, 12):
                box(x, y, x + 11, y + 5, wall * rng.uniform(0.85, 1.1))
    elif cam.props == "windows":
        for x in range(4, w, 16):
            for y in range(6, int(cam.horizon) - 10, 22):
                box(x, y, x + 11, y + 16, (150, 180, 205))
    else:  # bikes
        for x in rng.uniform(0, w - 20, 4):
            for dx in (0, 14):
                draw.ellipse(((x + dx) * s, (cam.horizon - 14) * s, (x + dx + 12) * s, (cam.horizon - 2) * s),
                             outline=(40, 40, 40), width=2 * s)
    return image


def _background(camid: int, shift: int) -> Image.Image:
    s = SUPERSAMPLE
    return _panorama(camid).crop((shift * s, 0, (shift + UNIT_W) * s, UNIT_H * s))


def _camera_effects(image: Image.Image, cam: Camera, view: View) -> Image.Image:
    """Blur, illumination (contrast, brightness, colour gain) and sensor noise."""
    if cam.blur > 0:
        image = image.filter(ImageFilter.GaussianBlur(cam.blur))
    pixels = np.asarray(image, dtype=np.float32)
    pixels = (pixels - 128.0) * cam.contrast + 128.0 + cam.brightness
    pixels = pixels * np.array(cam.gain, dtype=np.float32) * view.light
    rng = np.random.default_rng(view.noise_seed)
    pixels += rng.normal(0.0, cam.noise, pixels.shape).astype(np.float32)
    return Image.fromarray(np.clip(pixels + 0.5, 0, 255).astype(np.uint8), "RGB")
