"""Procedural pedestrians for the synthetic sample dataset (the figure; cameras are in :mod:`.cameras`).

A pedestrian is an :class:`Appearance`: the 12 attribute groups of :mod:`.schema` plus personal
details that stay fixed for one identity (skin tone, hair and shoe colour, a logo on the shirt,
a hem band, body width and height, gait). :func:`draw_person` draws it onto a canvas; it is a
pure function of its arguments, so flipping one attribute and drawing again changes only what
that attribute draws (the tests check each one).

Every attribute is drawn: hair length (a fringe, or hair down to the shoulders), hat (cap and
brim), sleeve length (covered or bare arms), lower-body length and type (trousers, shorts,
long or short skirt), upper and lower colours (multicolour as stripes, checks or halves),
backpack (pack behind the shoulders and straps from the front, the pack itself from the back),
shoulder bag (strap and bag at the hip), handbag (in one hand), gender (shoulder and hip
width, head size) and age (height and head-to-body ratio; grey hair when old).

Figures are defined in a 64 x 128 "unit" frame (x right, y down, feet at y = 122) and drawn
:data:`SUPERSAMPLE` times larger; the caller shrinks the canvas (anti-aliasing).
"""
from __future__ import annotations

import contextlib
import dataclasses
import math
from dataclasses import dataclass
from typing import Iterator, NamedTuple

import numpy as np
from PIL import Image, ImageDraw

from .. import schema

RGB = tuple[int, int, int]

SUPERSAMPLE = 4
UNIT_W, UNIT_H = 64, 128
FEET_Y = 122.0

#: Colours of the schema's colour names (upper and lower body).
COLOURS: dict[str, RGB] = {
    "black": (30, 30, 34),
    "white": (232, 232, 226),
    "red": (196, 36, 40),
    "purple": (118, 54, 150),
    "yellow": (228, 198, 44),
    "gray": (126, 126, 130),
    "blue": (42, 74, 170),
    "green": (42, 134, 64),
    "pink": (238, 146, 178),
    "brown": (118, 76, 40),
}
#: Extra colours for multicolour garments, logos, shoes and bags (not attribute classes).
EXTRA_COLOURS: tuple[RGB, ...] = (
    (236, 128, 36), (58, 182, 200), (30, 40, 92), (212, 192, 150), (124, 28, 52), (112, 122, 48),
)
PALETTE: tuple[RGB, ...] = tuple(COLOURS.values()) + EXTRA_COLOURS
SKIN_TONES: tuple[RGB, ...] = ((238, 204, 174), (224, 182, 148), (200, 152, 114), (164, 114, 82), (122, 86, 62))
HAIR_COLOURS: tuple[RGB, ...] = ((22, 20, 20), (52, 36, 28), (96, 64, 40), (124, 62, 36), (198, 162, 98))
GREY_HAIR: RGB = (204, 204, 200)
_BAG_COLOURS: tuple[RGB, ...] = (  # mostly dark, like real bags
    (COLOURS["black"],) * 3 + (EXTRA_COLOURS[2], COLOURS["brown"], COLOURS["gray"]) + PALETTE
)
PATTERNS = ("hstripes", "vstripes", "checks", "halves", "diagonal")
LOGO_SHAPES = ("circle", "square", "triangle", "diamond", "hbar", "vbar", "cross", "ring")

_G = {name: i for i, name in enumerate(schema.GROUP_NAMES)}
_UP_MULTI = len(schema.UP_COLOURS)  # class index of "multicolour"
_DOWN_MULTI = len(schema.DOWN_COLOURS)

# Attribute priors per identity, close to the course's annotations_train.csv but flattened so
# that the rare classes (young, old, hat, purple/yellow trousers) still occur in a 60-id sample.
_AGE_P = (0.06, 0.62, 0.24, 0.08)
_UP_COLOUR_P = (0.15, 0.27, 0.10, 0.05, 0.07, 0.12, 0.08, 0.07, 0.09)  # + multicolour
_DOWN_COLOUR_P = {  # black white pink purple yellow gray blue green brown multicolour
    "female": (0.31, 0.08, 0.09, 0.04, 0.03, 0.14, 0.15, 0.04, 0.06, 0.06),
    "male": (0.35, 0.06, 0.01, 0.02, 0.03, 0.16, 0.21, 0.04, 0.06, 0.06),
}
_AGE_HEIGHT = (0.72, 0.92, 1.0, 0.95)  # relative body height per age class
_AGE_HEAD = (0.088, 0.073, 0.067, 0.067)  # head radius / body height
_AGE_WIDTH = (0.95, 0.92, 1.04, 1.02)


@dataclass(frozen=True)
class Appearance:
    """One identity. ``groups`` holds its 12 attribute classes (schema.GROUPS order)."""

    groups: tuple[int, ...]
    skin: RGB
    hair_colour: RGB
    shoe_colour: RGB
    hat_colour: RGB
    bag_colour: RGB  # backpack, shoulder bag and handbag
    trim_colour: RGB  # hem band of the upper garment, seen from front and back
    up_shade: RGB  # personal offset added to the upper colour
    down_shade: RGB
    up_multi: tuple[RGB, ...]  # colours used when the upper colour is multicolour
    down_multi: tuple[RGB, ...]
    up_pattern: str
    down_pattern: str
    pattern_period: float  # unit px
    logo_shape: str
    logo_colour: RGB
    logo_offset: tuple[float, float]  # (x in -1..1 of half the chest, y in 0..1 of the torso)
    width: float  # body width factor
    height: float  # body height factor
    stride: float  # walking amplitude factor
    bag_side: int  # -1 or 1: hip of the shoulder bag (and hand holding the handbag: opposite)

    def with_attribute(self, group: str, value: int) -> "Appearance":
        """A copy with attribute group ``group`` set to class ``value``."""
        groups = list(self.groups)
        groups[schema.group_index(group)] = int(value)
        schema.validate_groups(np.array([groups]))
        return dataclasses.replace(self, groups=tuple(groups))

def sample_appearance(rng: np.random.Generator) -> Appearance:
    """Draw one identity, with attribute priors and correlations like the real data."""
    female = rng.random() < 0.46
    age = int(rng.choice(4, p=_AGE_P))
    dress = female and rng.random() < 0.3
    up_short = rng.random() < 0.82
    down_short = rng.random() < (0.8 if dress else 0.55) * (1.0 if up_short else 0.5)
    hair_long = rng.random() < (0.78 if female else 0.06) * (0.5 if age == 3 else 1.0)
    groups = [0] * schema.NUM_GROUPS
    groups[_G["age"]] = age
    groups[_G["backpack"]] = int(rng.random() < (0.34 if age <= 1 else 0.22))
    groups[_G["bag"]] = int(rng.random() < 0.25)
    groups[_G["handbag"]] = int(rng.random() < (0.18 if female else 0.08))
    groups[_G["clothes"]] = int(not dress)
    groups[_G["down"]] = int(down_short)
    groups[_G["up"]] = int(up_short)
    groups[_G["hair"]] = int(hair_long)
    groups[_G["hat"]] = int(rng.random() < 0.08)
    groups[_G["gender"]] = int(female)
    groups[_G["upcolour"]] = int(rng.choice(_UP_MULTI + 1, p=_UP_COLOUR_P))
    groups[_G["downcolour"]] = int(rng.choice(_DOWN_MULTI + 1, p=_DOWN_COLOUR_P["female" if female else "male"]))

    def colour(choices) -> RGB:
        base = choices[int(rng.integers(len(choices)))]
        return _clip(np.array(base) + rng.integers(-10, 11, 3))

    def shade() -> RGB:
        return tuple(int(v) for v in rng.integers(-14, 15, 3))

    def multi() -> tuple[RGB, ...]:
        idx = rng.choice(len(PALETTE), size=int(rng.integers(2, 4)), replace=False)
        return tuple(PALETTE[i] for i in idx)

    hair = HAIR_COLOURS[:2] * 3 + HAIR_COLOURS[2:]  # dark hair more common; the old get grey hair when drawn
    return Appearance(
        groups=tuple(groups),
        skin=colour(SKIN_TONES),
        hair_colour=colour(hair),
        shoe_colour=colour(PALETTE[:2] + PALETTE[5:7] + (COLOURS["brown"], COLOURS["red"])),
        hat_colour=colour(PALETTE),
        bag_colour=colour(_BAG_COLOURS),
        trim_colour=colour(PALETTE),
        up_shade=shade(),
        down_shade=shade(),
        up_multi=multi(),
        down_multi=multi(),
        up_pattern=PATTERNS[int(rng.integers(len(PATTERNS)))],
        down_pattern=PATTERNS[int(rng.integers(len(PATTERNS)))],
        pattern_period=float(rng.uniform(3.0, 6.0)),
        logo_shape=LOGO_SHAPES[int(rng.integers(len(LOGO_SHAPES)))],
        logo_colour=colour(PALETTE),
        logo_offset=(float(rng.uniform(-0.5, 0.5)), float(rng.uniform(0.25, 0.55))),
        width=float(rng.uniform(0.9, 1.12)),
        height=float(rng.uniform(0.95, 1.04)),
        stride=float(rng.uniform(0.5, 1.0)),
        bag_side=int(rng.choice((-1, 1))),
    )


# ---------------------------------------------------------------------------------------------
# Drawing


@dataclass(frozen=True)
class _Frame:
    """Maps the figure's unit frame to canvas pixels: scale about the feet, shift, mirror."""

    scale: float
    dx: float
    dy: float
    mirror: bool

    def point(self, x: float, y: float) -> tuple[float, float]:
        if self.mirror:
            x = UNIT_W - x
        x = (x - UNIT_W / 2) * self.scale + UNIT_W / 2 + self.dx
        y = (y - FEET_Y) * self.scale + FEET_Y + self.dy
        return x * SUPERSAMPLE, y * SUPERSAMPLE

    def box(self, box) -> tuple[float, float, float, float]:
        (x0, y0), (x1, y1) = self.point(box[0], box[1]), self.point(box[2], box[3])
        return min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1)

    def length(self, value: float) -> float:
        return value * self.scale * SUPERSAMPLE

    def unit_grid(self, box: tuple[int, int, int, int]) -> tuple[np.ndarray, np.ndarray]:
        """Unit-frame coordinates (x, y) of the canvas pixels in ``box`` (left, top, right, bottom)."""
        py, px = np.mgrid[box[1]:box[3], box[0]:box[2]].astype(np.float32) / SUPERSAMPLE
        x = (px - UNIT_W / 2 - self.dx) / self.scale + UNIT_W / 2
        y = (py - FEET_Y - self.dy) / self.scale + FEET_Y
        return (UNIT_W - x if self.mirror else x), y


class _Pen:
    """Draws shapes given in unit coordinates through a :class:`_Frame`."""

    def __init__(self, draw: ImageDraw.ImageDraw, frame: _Frame, fill):
        self.draw, self.frame, self.fill = draw, frame, fill

    def polygon(self, points) -> None:
        self.draw.polygon([self.frame.point(x, y) for x, y in points], fill=self.fill)

    def ellipse(self, box) -> None:
        self.draw.ellipse(self.frame.box(box), fill=self.fill)

    def chord(self, box, start: float, end: float) -> None:
        """Angles as in PIL (degrees, clockwise from 3 o'clock); only symmetric chords survive mirroring."""
        self.draw.chord(self.frame.box(box), start, end, fill=self.fill)

    def rect(self, box, radius: float = 0.0) -> None:
        self.draw.rounded_rectangle(self.frame.box(box), radius=self.frame.length(radius), fill=self.fill)

    def line(self, points, width: float) -> None:
        """A thick polyline with round ends and joints."""
        w = max(1, round(self.frame.length(width)))
        self.draw.line([self.frame.point(x, y) for x, y in points], fill=self.fill, width=w, joint="curve")
        r = width / 2
        for x, y in (points[0], points[-1]):
            self.ellipse((x - r, y - r, x + r, y + r))


class _Layer:
    """The canvas seen through a frame; :meth:`paint` yields a pen with a colour or a pattern."""

    def __init__(self, canvas: Image.Image, frame: _Frame):
        self.canvas, self.frame = canvas, frame
        self.draw = ImageDraw.Draw(canvas)

    @contextlib.contextmanager
    def paint(self, fill) -> Iterator[_Pen]:
        """``fill``: an RGB tuple, or a :class:`_Pattern` for a multicolour garment."""
        if not isinstance(fill, _Pattern):
            yield _Pen(self.draw, self.frame, tuple(fill))
            return
        mask = Image.new("L", self.canvas.size, 0)
        yield _Pen(ImageDraw.Draw(mask), self.frame, 255)
        box = mask.getbbox()
        if box is not None:
            self.canvas.paste(_pattern_image(fill, self.frame, box), box, mask.crop(box))


def body_height(app: Appearance) -> float:
    """Height of the figure in unit px (hat excluded), before any scaling."""
    return 114.0 * _AGE_HEIGHT[app.groups[_G["age"]]] * app.height


def draw_person(
    canvas: Image.Image,
    app: Appearance,
    *,
    back: bool = False,
    phase: float = 0.0,
    scale: float = 1.0,
    dx: float = 0.0,
    dy: float = 0.0,
    mirror: bool = False,
) -> None:
    """Draw ``app`` onto ``canvas`` (RGB, ``SUPERSAMPLE`` x (64, 128) pixels), in place.

    ``back``: seen from behind (no face, no logo; the backpack's pack and long hair cover the
    back). ``phase``: walking phase in radians. The figure is scaled by ``scale`` about its feet,
    shifted by (``dx``, ``dy``) unit px and mirrored left-right if ``mirror``.
    """
    _draw_figure(_Layer(canvas, _Frame(scale, dx, dy, mirror)), app, back, phase)


def _draw_figure(layer: _Layer, app: Appearance, back: bool, phase: float) -> None:
    """The figure, defined in the unit frame with the feet centred at (32, 122)."""
    g = app.groups
    age, female = g[_G["age"]], g[_G["gender"]] == 1
    H = body_height(app)
    w = app.width * _AGE_WIDTH[age] * H / 114.0
    cx, top = UNIT_W / 2, FEET_Y - H
    r = H * _AGE_HEAD[age] * (0.94 if female else 1.0)  # head radius
    shoulder = (11.2 if female else 14.0) * w
    waist = (7.6 if female else 10.2) * w
    hip = (11.4 if female else 10.4) * w
    y_head = top + r
    y_sh = top + 2 * r + H * (0.015 if age == 3 else 0.03)  # the old stoop a little
    y_hip = top + H * 0.53
    y_ank = FEET_Y - H * 0.04
    leg_len = y_ank - y_hip
    leg_w, arm_w = 6.2 * w, 4.6 * w
    swing = H * 0.04 * app.stride * math.sin(phase)
    spread = H * 0.035 * app.stride * abs(math.cos(phase))

    up_fill = _garment_fill(app, upper=True)
    down_fill = _garment_fill(app, upper=False)

    # Legs, hips and feet.
    feet_x = (cx - hip * 0.45 - spread, cx + hip * 0.45 + spread)
    hips_x = (cx - hip * 0.45, cx + hip * 0.45)
    legs = [((hx, y_hip), (fx, y_ank)) for hx, fx in zip(hips_x, feet_x)]
    with layer.paint(app.skin) as pen:
        for leg in legs:
            pen.line(leg, leg_w * 0.9)
    with layer.paint(app.shoe_colour) as pen:
        for fx in feet_x:
            pen.ellipse((fx - H * 0.04, y_ank - H * 0.01, fx + H * 0.04, FEET_Y + 1))
    short = g[_G["down"]] == 1
    with layer.paint(down_fill) as pen:
        if g[_G["clothes"]] == 1:  # trousers or shorts
            end = 0.5 if short else 1.0
            pen.polygon([(cx - hip, y_hip - H * 0.03), (cx + hip, y_hip - H * 0.03),
                         (cx + hip, y_hip + H * 0.07), (cx - hip, y_hip + H * 0.07)])
            for (hx, hy), (fx, fy) in legs:
                pen.line([(hx, hy), (hx + (fx - hx) * end, hy + (fy - hy) * end)], leg_w * (1.25 if short else 1.1))
        else:  # dress or skirt: one flared shape
            bottom = y_hip + leg_len * (0.42 if short else 0.9)
            flare = hip + H * (0.05 if short else 0.07) + spread * 0.5
            pen.polygon([(cx - hip * 0.9, y_hip - H * 0.04), (cx + hip * 0.9, y_hip - H * 0.04),
                         (cx + flare, bottom), (cx - flare, bottom)])

    # Backpack seen from the front: the pack shows around the shoulders.
    if g[_G["backpack"]] and not back:
        _bag_rect(layer, app.bag_colour, (cx - shoulder - 3, y_sh - 4.5, cx + shoulder + 3, y_hip - H * 0.06), radius=3)

    # Neck and torso (upper garment), with the personal hem band.
    with layer.paint(app.skin) as pen:
        pen.rect((cx - r * 0.45, y_head, cx + r * 0.45, y_sh + 2))
    y_mid = (y_sh + y_hip) / 2
    torso = [(cx - shoulder, y_sh), (cx + shoulder, y_sh), (cx + waist, y_mid + H * 0.04),
             (cx + hip * 0.95, y_hip + H * 0.01), (cx - hip * 0.95, y_hip + H * 0.01), (cx - waist, y_mid + H * 0.04)]
    with layer.paint(up_fill) as pen:
        pen.polygon(torso)
    with layer.paint(app.trim_colour) as pen:
        pen.polygon([(cx - hip * 0.95, y_hip - H * 0.012), (cx + hip * 0.95, y_hip - H * 0.012),
                     (cx + hip * 0.95, y_hip + H * 0.01), (cx - hip * 0.95, y_hip + H * 0.01)])
    if not back:
        _draw_logo(layer, app, cx + app.logo_offset[0] * shoulder * 0.6, y_sh + (y_hip - y_sh) * app.logo_offset[1], H)

    # Arms: skin, then the sleeve (to the wrist, or a short stub), then the hand.
    wrists = []
    for side, sign in ((-1, 1), (1, -1)):
        sx, sy = cx + side * (shoulder - arm_w * 0.45), y_sh + arm_w * 0.45
        wx, wy = cx + side * (shoulder + 1.0) + sign * swing * 0.4, y_hip + H * 0.05
        ex, ey = (sx + wx) / 2 + side * 1.2, (sy + wy) / 2
        wrists.append((wx, wy))
        with layer.paint(app.skin) as pen:
            pen.line([(sx, sy), (ex, ey), (wx, wy)], arm_w)
            pen.ellipse((wx - arm_w * 0.6, wy - arm_w * 0.5, wx + arm_w * 0.6, wy + arm_w * 0.8))
        with layer.paint(up_fill) as pen:
            if g[_G["up"]] == 1:
                pen.line([(sx, sy), (sx + (ex - sx) * 0.8, sy + (ey - sy) * 0.8)], arm_w * 1.3)
            else:
                pen.line([(sx, sy), (ex, ey), (wx, wy - arm_w * 0.4)], arm_w * 1.1)

    # Backpack seen from behind: the pack over the back.
    if g[_G["backpack"]] and back:
        pack = (cx - shoulder * 0.9, y_sh - 1, cx + shoulder * 0.9, y_hip - H * 0.02)
        _bag_rect(layer, app.bag_colour, pack, radius=3)
        with layer.paint(_darker(app.bag_colour)) as pen:
            pen.rect((cx - shoulder * 0.55, y_mid, cx + shoulder * 0.55, y_hip - H * 0.05), radius=2)
    elif g[_G["backpack"]]:  # straps
        with layer.paint(_darker(app.bag_colour, 0.45)) as pen:
            for side in (-1, 1):
                strap = [(cx + side * shoulder * 0.55, y_sh - 1), (cx + side * shoulder * 0.62, y_mid + H * 0.04)]
                pen.line(strap, H * 0.032)

    _draw_head(layer, app, back, cx, top, r, y_head, y_sh, H)

    # Shoulder bag: strap across the chest, bag at the hip.
    side = app.bag_side
    if g[_G["bag"]]:
        with layer.paint(_darker(app.bag_colour, 0.45)) as pen:
            pen.line([(cx - side * shoulder * 0.7, y_sh + 1), (cx + side * hip * 0.9, y_hip)], H * 0.024)
        bx = cx + side * (hip + H * 0.025)
        _bag_rect(layer, app.bag_colour, (bx - H * 0.07, y_hip - H * 0.05, bx + H * 0.07, y_hip + H * 0.07), radius=1.5)
    # Handbag: hanging from the other hand.
    if g[_G["handbag"]]:
        wx, wy = wrists[0] if side == 1 else wrists[1]
        with layer.paint(_darker(app.bag_colour, 0.45)) as pen:
            pen.line([(wx - H * 0.025, wy + H * 0.03), (wx, wy), (wx + H * 0.025, wy + H * 0.03)], H * 0.014)
            pen.polygon([(wx - H * 0.05, wy + H * 0.022), (wx + H * 0.05, wy + H * 0.022),
                         (wx + H * 0.066, wy + H * 0.12), (wx - H * 0.066, wy + H * 0.12)])
        with layer.paint(app.bag_colour) as pen:
            pen.polygon([(wx - H * 0.04, wy + H * 0.03), (wx + H * 0.04, wy + H * 0.03),
                         (wx + H * 0.055, wy + H * 0.11), (wx - H * 0.055, wy + H * 0.11)])


def _bag_rect(layer: _Layer, colour: RGB, box, radius: float) -> None:
    """A bag-like rounded box with a dark outline (so it shows on clothes of any colour)."""
    with layer.paint(_darker(colour, 0.45)) as pen:
        pen.rect((box[0] - 0.8, box[1] - 0.8, box[2] + 0.8, box[3] + 0.8), radius=radius + 0.8)
    with layer.paint(colour) as pen:
        pen.rect(box, radius=radius)


def _draw_head(layer: _Layer, app: Appearance, back: bool, cx, top, r, y_head, y_sh, H) -> None:
    """Face, hair (short: a cap of hair; long: down to below the shoulders) and hat."""
    g = app.groups
    long_hair = g[_G["hair"]] == 1
    if g[_G["age"]] == 3:  # grey hair
        app = dataclasses.replace(app, hair_colour=_clip(0.25 * np.array(app.hair_colour) + 0.75 * np.array(GREY_HAIR)))
    head = (cx - r * 0.88, top, cx + r * 0.88, top + 2 * r)
    fringe = (cx - r * 0.95, top - r * 0.08, cx + r * 0.95, top + r * 1.8)
    with layer.paint(app.hair_colour) as pen:
        if long_hair:  # behind the face from the front, over the back from behind
            bottom = y_sh + H * (0.11 if back else 0.08)
            pen.rect((cx - r * 1.12, y_head - r * 0.6, cx + r * 1.12, bottom), radius=r * 0.6)
        if back:
            pen.ellipse(head)
    if not back:
        with layer.paint(app.skin) as pen:
            pen.ellipse(head)
        with layer.paint(app.hair_colour) as pen:
            pen.chord(fringe, 180, 360)
    if g[_G["hat"]]:
        with layer.paint(app.hat_colour) as pen:
            pen.chord((cx - r * 1.02, top - r * 0.3, cx + r * 1.02, top + r * 1.5), 180, 360)
            brim_y = top + r * 0.6
            if back:
                pen.rect((cx - r * 1.0, brim_y - r * 0.15, cx + r * 1.0, brim_y + r * 0.12))
            else:
                pen.ellipse((cx - r * 1.35, brim_y - r * 0.2, cx + r * 1.35, brim_y + r * 0.32))


def _draw_logo(layer: _Layer, app: Appearance, x: float, y: float, H: float) -> None:
    """The identity's logo on the chest (front view only)."""
    s = H * 0.045
    with layer.paint(app.logo_colour) as pen:
        shape = app.logo_shape
        if shape in ("circle", "ring"):
            pen.ellipse((x - s, y - s, x + s, y + s))
        elif shape == "square":
            pen.rect((x - s, y - s, x + s, y + s))
        elif shape == "triangle":
            pen.polygon([(x, y - s), (x + s, y + s), (x - s, y + s)])
        elif shape == "diamond":
            pen.polygon([(x, y - s * 1.3), (x + s, y), (x, y + s * 1.3), (x - s, y)])
        elif shape == "hbar":
            pen.rect((x - s * 1.8, y - s * 0.45, x + s * 1.8, y + s * 0.45))
        elif shape == "vbar":
            pen.rect((x - s * 0.45, y - s * 1.5, x + s * 0.45, y + s * 1.5))
        else:  # cross
            pen.rect((x - s * 1.3, y - s * 0.35, x + s * 1.3, y + s * 0.35))
            pen.rect((x - s * 0.35, y - s * 1.3, x + s * 0.35, y + s * 1.3))
    if app.logo_shape == "ring":
        with layer.paint(_darker(app.logo_colour, 0.4)) as pen:
            pen.ellipse((x - s * 0.5, y - s * 0.5, x + s * 0.5, y + s * 0.5))


def _garment_fill(app: Appearance, upper: bool):
    """A solid colour (the attribute colour plus the personal shade) or a multicolour pattern."""
    if upper:
        index, names, shade = app.groups[_G["upcolour"]], schema.UP_COLOURS, app.up_shade
        colours, pattern = app.up_multi, app.up_pattern
    else:
        index, names, shade = app.groups[_G["downcolour"]], schema.DOWN_COLOURS, app.down_shade
        colours, pattern = app.down_multi, app.down_pattern
    if index < len(names):
        return _clip(np.array(COLOURS[names[index]]) + np.array(shade))
    return _Pattern(colours, pattern, app.pattern_period)


class _Pattern(NamedTuple):
    colours: tuple[RGB, ...]
    kind: str  # one of PATTERNS
    period: float  # unit px


def _pattern_image(fill: _Pattern, frame: _Frame, box) -> Image.Image:
    """The canvas pixels in ``box`` tiled with a multicolour pattern that moves with the figure."""
    x, y = frame.unit_grid(box)
    pattern, period, colours = fill.kind, fill.period, fill.colours
    if pattern == "hstripes":
        index = y // period
    elif pattern == "vstripes":
        index = x // period
    elif pattern == "checks":
        index = x // period + y // period
    elif pattern == "halves":  # left and right halves, the lower part in the last colour
        index = (x >= UNIT_W / 2) + (y >= UNIT_H * 0.75) * 2
    else:  # diagonal stripes
        index = (x + y) // (period * 1.4)
    pixels = np.array(colours, dtype=np.uint8)[index.astype(np.int64) % len(colours)]
    return Image.fromarray(pixels, "RGB")


def _darker(colour: RGB, factor: float = 0.6) -> RGB:
    return tuple(int(v * factor) for v in colour)


def _clip(values) -> RGB:
    return tuple(int(v) for v in np.clip(np.asarray(values), 0, 255))
