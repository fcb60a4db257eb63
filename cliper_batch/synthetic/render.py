"""Drawing: a person with an expression as a face crop (:func:`render_face`) or in a scene (:func:`render_scene`).

Pillow at 2x supersampling (box-downsampled: cheap anti-aliasing) plus numpy
for lighting, noise and blur. :data:`CROP_REGIONS` says where each facial
feature lands in a :func:`render_face` crop.
"""
from __future__ import annotations

import functools
import math
from typing import Sequence, Union

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from dataclasses import replace

from .person import RGB, ActionUnits, Lighting, PersonParams, SyntheticError, expression_units, sample_pose_lighting

SUPERSAMPLE = 2  # draw at 2x, then box-downsample: cheap anti-aliasing

# Where the face lands in a render_face crop (fractions of the crop side, no pose
# jitter): x0, y0, x1, y1. Derived from the canonical geometry below; tests and
# downstream code (e.g. region-wise checks) use it instead of guessing.
CROP_REGIONS: dict[str, tuple[float, float, float, float]] = {}


# --------------------------------------------------------------------------- drawing


@functools.lru_cache(maxsize=None)
def _curve(n: int) -> np.ndarray:
    """n points evenly spread over [-1, 1] (cached, read-only)."""
    out = np.linspace(-1.0, 1.0, n)
    out.flags.writeable = False
    return out


_T11 = np.linspace(0.0, 1.0, 11)
_WING_COS, _WING_SIN = np.cos(np.linspace(-1.6, 1.2, 9)), np.sin(np.linspace(-1.6, 1.2, 9))
_CIRCLE = np.stack([np.cos(np.linspace(0, 2 * np.pi, 40, endpoint=False)), np.sin(np.linspace(0, 2 * np.pi, 40, endpoint=False))], 1)


class _Xform:
    """Face units -> supersampled pixels: translate(origin) . scale(s) . rotate(roll) . yaw-shift."""

    def __init__(self, origin: tuple[float, float], scale: float, roll_deg: float, yaw: float):
        self.s = scale
        a = math.radians(roll_deg)
        c, si = math.cos(a) * scale, math.sin(a) * scale
        self.m = np.array([[c, si], [-si, c]])  # row-vector convention: q = p @ m + o
        self.o = np.array(origin, np.float64)
        self.yaw = yaw

    def __call__(self, p: np.ndarray, depth: float = 0.0) -> list[float]:
        o = self.o + (self.yaw * depth) * self.m[0] if depth else self.o
        return (np.asarray(p, np.float64) @ self.m + o).ravel().tolist()

    def w(self, units: float) -> int:
        return max(1, int(round(units * self.s)))


def _ellipse(cx: float, cy: float, rx: float, ry: float) -> np.ndarray:
    return _CIRCLE * np.array([rx, ry]) + np.array([cx, cy])


def _shade(c: RGB, k: float, add: float = 0.0) -> RGB:
    r, g, b = (min(255, max(0, int(round(v * k + add)))) for v in c)
    return (r, g, b)


def _rgba(c: RGB, a: float) -> tuple[int, int, int, int]:
    return (c[0], c[1], c[2], int(max(0, min(255, round(a)))))


def _oval(p: PersonParams, au: ActionUnits, n: int = 64) -> np.ndarray:
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)
    st = np.sin(t)
    lower = np.clip(st, 0, None)
    x = np.cos(t) * (1 - p.jaw * lower**2 * 0.55) * (1 + 0.04 * np.clip(-st, 0, None))
    y = st * p.face_aspect * (1 + 0.07 * max(0.0, au.jaw_drop) * lower)
    return np.stack([x, y], 1)


def _draw_hair_back(d: ImageDraw.ImageDraw, T: _Xform, p: PersonParams) -> None:
    A, hc = p.face_aspect, p.hair_color
    if p.hair_style == 1:  # long: a mane behind the head down to the shoulders
        top = _ellipse(0, -0.08, 1.16, A * 1.0)[20:]  # upper half (angles pi..2pi)
        shape = np.concatenate([top, [[1.2, 0.2], [1.25, 1.75], [-1.25, 1.75], [-1.2, 0.2]]])
        d.polygon(T(shape), fill=hc)
    elif p.hair_style == 3:  # curly: a bumpy halo
        t = np.linspace(0, 2 * np.pi, 72, endpoint=False)
        r = 1.3 + 0.07 * np.cos(t * 14)
        shape = np.stack([np.cos(t) * r * 1.02, -0.35 + np.sin(t) * r * A * 0.82], 1)
        d.polygon(T(shape), fill=hc)


def _draw_hair_front(d: ImageDraw.ImageDraw, T: _Xform, p: PersonParams) -> None:
    A, hc, hl = p.face_aspect, p.hair_color, p.hairline
    if p.hair_style == 2:  # buzz cut: thin translucent cap
        cap = _ellipse(0, 0.0, 1.03, A * 1.02)[20:]
        line = np.array([[1.0, -0.35], [0.6, hl - 0.2], [0.0, hl - 0.28], [-0.6, hl - 0.2], [-1.0, -0.35]])
        d.polygon(T(np.concatenate([cap, line])), fill=_rgba(hc, 150))
        return
    cap = _ellipse(0, -0.02, 1.06, A * 1.05)[20:]  # from the left temple over the top to the right temple
    if p.hair_style == 4:  # fringe across the forehead (kept above the brows)
        line = np.array([[1.02, -0.2], [0.85, -0.5], [0.5, -0.58], [0.15, -0.52], [-0.2, -0.6], [-0.6, -0.55], [-0.9, -0.4], [-1.02, -0.2]])
    elif p.hair_style == 1:  # long: side locks framing the face
        line = np.array([[1.05, 0.55], [0.93, 0.1], [0.8, -0.35], [0.45, hl + 0.02], [0.0, hl - 0.04], [-0.45, hl], [-0.8, -0.35], [-0.93, 0.1], [-1.05, 0.55]])
        cap = np.concatenate([cap, [[1.2, 0.55]]])
        line = np.concatenate([line, [[-1.2, 0.55]]])
    elif p.hair_style == 3:
        t = np.linspace(0.15, np.pi - 0.15, 15)
        line = np.stack([np.cos(t) * 0.98, hl + 0.05 - 0.05 * np.cos(t * 9) - 0.1 * np.sin(t) + 0.35 * (1 - np.sin(t))], 1)
    else:  # short
        line = np.array([[1.02, -0.3], [0.85, hl + 0.2], [0.55, hl + 0.02], [0.1, hl - 0.02], [-0.4, hl + 0.03], [-0.8, hl + 0.15], [-1.02, -0.3]])
    d.polygon(T(np.concatenate([cap, line])), fill=hc)
    # a few strands for texture
    dark = _shade(hc, 0.7)
    for k in (-0.5, 0.0, 0.45):
        strand = np.array([[k - 0.1, -A * 0.93], [k, hl - 0.12]])
        d.line(T(strand), fill=dark, width=T.w(0.025))


def _draw_eye(d: ImageDraw.ImageDraw, T: _Xform, p: PersonParams, au: ActionUnits, side: float, skin: RGB) -> None:
    fy = p.face_aspect / 1.3
    ex, ey = side * p.eye_spacing, 0.08 * fy
    ew = 0.19 * p.eye_size
    ir = 0.078 * p.eye_size
    openness = max(0.0, 1.0 - au.blink)
    hu = 0.075 * p.eye_size * (1 + (0.75 if au.upper_lid > 0 else 0.55) * au.upper_lid) * openness
    hl = 0.055 * p.eye_size * (1 + 0.3 * max(0.0, au.upper_lid) - 0.55 * au.lower_lid) * openness
    hl = max(hl, 0.004)
    u = _curve(15)
    bell = (1 - u**2) ** 0.75
    skew = 1 + 0.12 * u * side  # the lid peak sits a little toward the outer corner
    up = np.stack([ex + u * ew, ey - hu * bell * skew], 1)
    lo = np.stack([ex + u * ew, ey + hl * bell + 0.012 * (1 - u**2) * au.lower_lid], 1)
    depth = 0.1
    if hu + hl > 0.02:
        d.polygon(T(np.concatenate([up, lo[::-1]]), depth), fill=(236, 234, 228))
        gx = ex  # looking ahead
        gy = ey + 0.035 * au.gaze_down - 0.004
        d.polygon(T(_ellipse(gx, gy, ir, ir), depth + 0.02), fill=p.iris_color)
        d.polygon(T(_ellipse(gx, gy, ir * 0.45, ir * 0.45), depth + 0.02), fill=(12, 10, 10))
        d.polygon(T(_ellipse(gx + ir * 0.35, gy - ir * 0.35, ir * 0.18, ir * 0.18), depth + 0.02), fill=(250, 250, 250))
        # cover what spills past the lids with skin
        top = ey - max(hu, ir) - 0.05
        bot = ey + max(hl, ir) + 0.05
        d.polygon(T(np.concatenate([up, [[ex + ew + 0.01, ey], [ex + ew + 0.01, top], [ex - ew - 0.01, top], [ex - ew - 0.01, ey]]]), depth), fill=skin)
        d.polygon(T(np.concatenate([lo, [[ex + ew + 0.01, ey], [ex + ew + 0.01, bot], [ex - ew - 0.01, bot], [ex - ew - 0.01, ey]]]), depth), fill=skin)
    lid_dark = _shade(skin, 0.25, 5)
    d.line(T(up, depth), fill=lid_dark, width=T.w(0.026), joint="curve")
    # upper eyelid crease and a lower-lid line (stronger when the lower lid is tense)
    crease = up.copy()
    crease[:, 1] -= 0.045 + 0.02 * max(0.0, au.upper_lid)
    d.line(T(crease[2:-2], depth), fill=_rgba(_shade(skin, 0.6), 130), width=T.w(0.012))
    d.line(T(lo, depth), fill=_rgba(_shade(skin, 0.55), 110 + 120 * min(1.0, au.lower_lid)), width=T.w(0.012))
    if au.cheek_raise > 0.05:  # crow's feet
        ox = ex + side * (ew + 0.03)
        for k, dy in enumerate((-0.04, 0.0, 0.04)):
            seg = np.array([[ox, ey + dy * 0.6], [ox + side * 0.08, ey + dy * 1.6]])
            d.line(T(seg, depth), fill=_rgba(_shade(skin, 0.55), 200 * min(1.0, au.cheek_raise)), width=T.w(0.012))
    if au.lower_lid > 0.05 or au.cheek_raise > 0.05:  # puffed lower lid / raised cheek bag
        bag = lo.copy()
        bag[:, 1] += 0.04
        d.line(T(bag[3:-3], depth), fill=_rgba(_shade(skin, 0.6), 140 * min(1.0, max(au.lower_lid, au.cheek_raise))), width=T.w(0.012))


def _brow_line(p: PersonParams, au: ActionUnits, side: float) -> tuple[np.ndarray, np.ndarray]:
    fy = p.face_aspect / 1.3
    base = -0.22 * fy - 0.16 * au.brow_raise
    xi = p.eye_spacing - 0.17 - 0.075 * au.brow_together
    xo = p.eye_spacing + 0.25
    arch = 0.035 * (1 + 1.0 * max(0.0, au.brow_raise) - 0.6 * max(0.0, au.brow_inner))
    yi = base + 0.015 - 0.14 * au.brow_inner
    yo = base + 0.035 + 0.02 * max(0.0, -au.brow_raise)
    yp = base - arch
    t = _T11
    # quadratic through (0, yi), (0.6, yp), (1, yo)
    y = yi * (t - 0.6) * (t - 1) / 0.6 + yp * t * (t - 1) / (0.6 * -0.4) + yo * t * (t - 0.6) / 0.4
    x = xi + (xo - xi) * t
    return np.stack([side * x, y], 1), t


def _draw_brows(d: ImageDraw.ImageDraw, T: _Xform, p: PersonParams, au: ActionUnits) -> None:
    for side in (-1.0, 1.0):
        line, t = _brow_line(p, au, side)
        w = p.brow_thickness * (1.0 - 0.45 * t)
        top = line - np.stack([np.zeros_like(w), w * 0.5], 1)
        bot = line + np.stack([np.zeros_like(w), w * 0.5], 1)
        d.polygon(T(np.concatenate([top, bot[::-1]]), 0.08), fill=p.brow_color)


def _mouth_shape(p: PersonParams, au: ActionUnits) -> dict[str, np.ndarray]:
    fy = p.face_aspect / 1.3
    my = (0.8 + 0.06 * (p.nose_length - 1)) * fy
    mw = p.mouth_width * (1 + 0.4 * au.mouth_width)
    dc = -0.18 * au.corner_up
    u = _curve(21)
    centre = my + dc * u**2
    opening = 0.006 + 0.24 * max(0.0, au.jaw_drop)
    side_w = np.clip(1 + 0.7 * au.lip_side * u, 0.3, 1.7)
    ot = opening * 0.28 + 0.06 * au.upper_lip_raise * side_w * (1 - u**2) ** 0.3
    ob = opening * 0.72 + 0.02 * au.upper_lip_raise
    round_ = 0.5 if au.mouth_width < -0.3 else 0.8  # "O" mouths are rounder
    top = centre - ot * (1 - u**2) ** round_
    bottom = centre + ob * (1 - u**2) ** 0.55 - 0.02 * au.chin_raise * (1 - u**2)
    bottom = np.maximum(bottom, top)
    stretch = 1 - 0.3 * max(0.0, au.mouth_width)
    tu = 0.042 * p.lip_fullness * (1 - 0.8 * au.lip_press) * stretch
    tl = 0.06 * p.lip_fullness * (1 - 0.75 * au.lip_press) * stretch * (1 + 0.25 * au.chin_raise)
    bow = 1 - 0.35 * np.exp(-((u / 0.12) ** 2))  # cupid's bow dip at the centre
    upper_outer = top - tu * (1 - u**2) ** 0.4 * bow
    lower_outer = bottom + tl * (1 - u**2) ** 0.5
    x = u * mw
    return dict(x=x, u=u, top=top, bottom=bottom, upper=upper_outer, lower=lower_outer, my=np.array(my), mw=np.array(mw), dc=np.array(dc))


def _draw_mouth(d: ImageDraw.ImageDraw, T: _Xform, p: PersonParams, au: ActionUnits, skin: RGB) -> None:
    m = _mouth_shape(p, au)
    x, u = m["x"], m["u"]
    depth = 0.12
    lips = np.concatenate([np.stack([x, m["upper"]], 1), np.stack([x, m["lower"]], 1)[::-1]])
    d.polygon(T(lips, depth), fill=p.lip_color)
    gap = m["bottom"] - m["top"]
    if gap.max() > 0.02:
        d.polygon(T(np.concatenate([np.stack([x, m["top"]], 1), np.stack([x, m["bottom"]], 1)[::-1]]), depth), fill=(55, 18, 22))
        keep = np.abs(u) < 0.82
        if au.teeth > 0.35 and gap.max() > 0.035:
            th = np.minimum(gap, 0.055)
            band = np.concatenate([np.stack([x, m["top"]], 1)[keep], np.stack([x, m["top"] + th], 1)[keep][::-1]])
            d.polygon(T(band, depth), fill=(238, 234, 222))
        if au.lower_teeth > 0.35 and gap.max() > 0.03:
            th = np.minimum(gap, 0.045)
            band = np.concatenate([np.stack([x, m["bottom"] - th], 1)[keep], np.stack([x, m["bottom"]], 1)[keep][::-1]])
            d.polygon(T(band, depth), fill=(225, 220, 205))
    # the line where the lips meet (darker when pressed)
    mid = np.stack([x, (m["top"] + m["bottom"]) / 2 if gap.max() <= 0.02 else m["top"]], 1)
    d.line(T(mid, depth), fill=_shade(p.lip_color, 0.45 - 0.2 * min(1.0, au.lip_press)), width=T.w(0.03 + 0.012 * au.lip_press), joint="curve")
    # mouth-corner dimples / tension marks
    for sgn in (-1, 1):
        cx, cy = sgn * float(m["mw"]), float(m["my"] + m["dc"])
        dot = _ellipse(cx + sgn * 0.02, cy, 0.018, 0.018)
        d.polygon(T(dot, depth), fill=_rgba(_shade(skin, 0.5), 120))
    if au.chin_raise > 0.05 or au.lip_press > 0.05:  # chin boss / mentalis bulge
        k = max(au.chin_raise, 0.6 * au.lip_press)
        arc = np.stack([_curve(9) * 0.16, float(m["my"]) + 0.2 + 0.03 * (1 - _curve(9) ** 2)], 1)
        d.line(T(arc, depth), fill=_rgba(_shade(skin, 0.6), 170 * min(1.0, k)), width=T.w(0.014))
        if au.chin_raise > 0.3:
            for cx in (-0.06, 0.0, 0.07):
                d.polygon(T(_ellipse(cx, float(m["my"]) + 0.26, 0.012, 0.01), depth), fill=_rgba(_shade(skin, 0.6), 150 * au.chin_raise))


def _draw_nose(d: ImageDraw.ImageDraw, T: _Xform, p: PersonParams, au: ActionUnits, skin: RGB) -> None:
    fy = p.face_aspect / 1.3
    ny = 0.5 * fy * p.nose_length
    lift = 0.03 * au.nose_wrinkle
    depth = 0.2
    shade = _shade(skin, 0.6)
    # bridge shadow along one side
    bridge = np.array([[0.075, 0.05 * fy], [0.085, ny - 0.12], [0.11, ny - 0.04]])
    d.line(T(bridge, depth), fill=_rgba(shade, 110), width=T.w(0.03), joint="curve")
    # tip and wings
    flare = 1 + 0.35 * au.nostril_flare + 0.2 * au.nose_wrinkle
    tip = _ellipse(0, ny - lift - 0.01, 0.075, 0.05)
    d.polygon(T(tip, depth), fill=_shade(skin, 1.04, 4))
    for sgn in (-1, 1):
        wing = np.stack([sgn * (0.09 * flare + 0.04 * _WING_COS), ny - lift + 0.045 * _WING_SIN - 0.01], 1)
        d.line(T(wing, depth), fill=_rgba(shade, 180), width=T.w(0.018), joint="curve")
        d.polygon(T(_ellipse(sgn * 0.055 * flare, ny - lift + 0.03, 0.032 * flare, 0.017), depth), fill=_shade(skin, 0.3))
    if au.nose_wrinkle > 0.05:  # creases across the bridge and "bunny lines"
        a = 220 * min(1.0, au.nose_wrinkle)
        for k, yy in enumerate((0.08, 0.15, 0.22)):
            seg = np.stack([_curve(5) * (0.07 + 0.015 * k), yy * fy - 0.012 * (1 - _curve(5) ** 2)], 1)
            d.line(T(seg, depth), fill=_rgba(_shade(skin, 0.45), a), width=T.w(0.016))
        for sgn in (-1, 1):
            seg = np.array([[sgn * 0.1, 0.1 * fy], [sgn * 0.2, 0.22 * fy]])
            d.line(T(seg, depth), fill=_rgba(_shade(skin, 0.5), a * 0.8), width=T.w(0.015))


def _draw_creases(d: ImageDraw.ImageDraw, T: _Xform, p: PersonParams, au: ActionUnits, skin: RGB) -> None:
    fy = p.face_aspect / 1.3
    line_c = _shade(skin, 0.58)
    if au.forehead_lines > 0.05:
        base = -0.22 * fy - 0.16 * au.brow_raise
        for k in range(3):
            y = base - 0.14 - 0.075 * k
            seg = np.stack([_curve(9) * (0.42 - 0.05 * k), y + 0.03 * _curve(9) ** 2], 1)
            d.line(T(seg, 0.03), fill=_rgba(line_c, 190 * min(1.0, au.forehead_lines)), width=T.w(0.014), joint="curve")
    if au.glabella > 0.05:
        for sgn in (-1, 1):
            seg = np.array([[sgn * 0.045, -0.17 * fy], [sgn * 0.035, -0.02 * fy]])
            d.line(T(seg, 0.06), fill=_rgba(line_c, 220 * min(1.0, au.glabella)), width=T.w(0.016))
    # nasolabial folds: deeper with raised cheeks / upper lip
    m = _mouth_shape(p, au)
    ny = 0.5 * fy * p.nose_length
    k = min(1.0, 0.25 + 0.9 * au.cheek_raise + 0.7 * au.upper_lip_raise + 0.4 * max(0.0, au.mouth_width))
    for sgn in (-1, 1):
        cx, cy = float(m["mw"]) + 0.06, float(m["my"] + m["dc"]) + 0.06
        fold = np.array([[sgn * 0.17, ny], [sgn * (0.17 + cx) / 2 * 1.15, (ny + cy) / 2], [sgn * cx, cy]])
        d.line(T(fold, 0.1), fill=_rgba(line_c, 160 * k), width=T.w(0.016), joint="curve")


def _draw_head(d: ImageDraw.ImageDraw, T: _Xform, p: PersonParams, au: ActionUnits) -> None:
    """Everything of one person, back to front."""
    skin = p.skin
    A = p.face_aspect
    # body and neck
    d.polygon(T(np.array([[-0.42, 0.6], [0.42, 0.6], [0.46, A + 0.7], [-0.46, A + 0.7]])), fill=_shade(skin, 0.82))
    d.polygon(T(_ellipse(0, A + 1.4, 2.2, 0.95)), fill=p.clothing_color)
    d.polygon(T(_ellipse(0, A + 0.5, 0.5, 0.14)), fill=_shade(skin, 0.72))  # shadow under the chin / collar line
    _draw_hair_back(d, T, p)
    # ears
    for sgn in (-1, 1):
        d.polygon(T(_ellipse(sgn * 0.98, 0.18, 0.13, 0.23), -0.05), fill=_shade(skin, 0.9))
        d.polygon(T(_ellipse(sgn * 1.0, 0.18, 0.06, 0.13), -0.05), fill=_shade(skin, 0.75))
    # face oval: shaded rim then the lit face
    oval = _oval(p, au)
    d.polygon(T(oval), fill=_shade(skin, 0.8))
    d.polygon(T(oval * np.array([0.93, 0.965]) + np.array([-0.05, -0.02])), fill=skin)
    # cheeks (blush lifts with AU6)
    for sgn in (-1, 1):
        blush = _ellipse(sgn * 0.5, 0.45 - 0.07 * au.cheek_raise, 0.2, 0.13)
        d.polygon(T(blush, 0.05), fill=(205, 90, 90, int(18 + 45 * min(1.0, au.cheek_raise))))
    # eye sockets a little darker than the cheeks, the nose bridge a little lighter (as in real faces)
    fy = A / 1.3
    for sgn in (-1.0, 1.0):
        d.polygon(T(_ellipse(sgn * p.eye_spacing, 0.06 * fy, 0.27, 0.17), 0.08), fill=_rgba(_shade(skin, 0.55), 55))
    d.polygon(T(_ellipse(0, 0.2 * fy, 0.07, 0.22), 0.15), fill=_rgba(_shade(skin, 1.1, 20), 70))
    _draw_creases(d, T, p, au, skin)
    for sgn in (-1.0, 1.0):
        _draw_eye(d, T, p, au, sgn, skin)
    _draw_brows(d, T, p, au)
    _draw_nose(d, T, p, au, skin)
    _draw_mouth(d, T, p, au, skin)
    _draw_hair_front(d, T, p)


def background(rng: np.random.Generator, w: int, h: int) -> Image.Image:
    """A cluttered background: two-colour gradient plus random shapes (w, h in supersampled pixels)."""
    c0, c1 = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
    a = rng.uniform(0, 2 * math.pi)
    gw, gh = 9, 9  # the gradient is linear: compute it coarse, let bilinear resize fill in
    ramp = (np.cos(a) * np.linspace(-0.5, 0.5, gw)[None, :] + np.sin(a) * np.linspace(-0.5, 0.5, gh)[:, None]) + 0.5
    img = (c0 * (1 - ramp[..., None]) + c1 * ramp[..., None]).astype(np.uint8)
    # clutter needs no anti-aliasing: draw it at 1x and upscale, 4x fewer pixels to fill
    w1, h1 = max(1, w // SUPERSAMPLE), max(1, h // SUPERSAMPLE)
    im = Image.fromarray(img, "RGB").resize((w1, h1), Image.Resampling.BILINEAR)
    w, h = w1, h1
    d = ImageDraw.Draw(im, "RGBA")
    for _ in range(int(rng.integers(4, 13))):
        col = tuple(int(v) for v in rng.integers(0, 256, 3)) + (int(rng.integers(90, 256)),)
        kind = int(rng.integers(0, 4))
        x0, y0 = rng.uniform(-0.1, 1.0) * w, rng.uniform(-0.1, 1.0) * h
        x1, y1 = x0 + rng.uniform(0.05, 0.6) * w, y0 + rng.uniform(0.05, 0.6) * h
        if kind == 0:
            d.rectangle([x0, y0, x1, y1], fill=col)
        elif kind == 1:
            d.ellipse([x0, y0, x1, y1], fill=col)
        elif kind == 2:
            d.line([x0, y0, x1, y1], fill=col, width=int(rng.integers(1, max(2, w // 30))))
        else:
            pts = rng.uniform(0, 1, (int(rng.integers(3, 6)), 2)) * np.array([w, h])
            d.polygon(pts.ravel().tolist(), fill=col)
    return im.resize((w * SUPERSAMPLE, h * SUPERSAMPLE), Image.Resampling.NEAREST)


def light_fields(light: Lighting, h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-pixel (mul, add) float32 fields so that lit = raw * mul + add (includes +0.5 for rounding)."""
    ramp = math.cos(light.angle) * np.linspace(-0.5, 0.5, w, dtype=np.float32)[None, :] + math.sin(light.angle) * np.linspace(
        -0.5, 0.5, h, dtype=np.float32
    )[:, None]
    grad = (1.0 + light.strength * ramp)[..., None] * np.asarray(light.gain, np.float32)
    mul = (grad * light.contrast).astype(np.float32)
    add = (grad * (128.0 * (1.0 - light.contrast) + light.brightness) + 0.5).astype(np.float32)
    return mul, add


def finish_frame(
    im: Image.Image, fields_: tuple[np.ndarray, np.ndarray], rng: np.random.Generator, blur: float, noise: float | np.ndarray
) -> np.ndarray:
    """Downsample, blur, apply lighting fields and sensor noise -> (H, W, 3) uint8.

    ``noise`` is a standard deviation (fresh noise from ``rng``) or a ready noise field to add.
    """
    im = im.reduce(SUPERSAMPLE)
    if blur > 0.05:
        im = im.filter(ImageFilter.GaussianBlur(blur))
    arr = np.asarray(im, dtype=np.float32)
    mul, add = fields_
    arr *= mul
    arr += add
    if isinstance(noise, np.ndarray):
        arr += noise
    elif noise > 0:  # uniform noise with standard deviation `noise` (cheaper than Gaussian, looks the same)
        n = rng.random(arr.shape, dtype=np.float32)
        n -= 0.5
        n *= noise * math.sqrt(12.0)
        arr += n
    np.clip(arr, 0, 255, out=arr)
    return arr.astype(np.uint8)


# --------------------------------------------------------------------------- public rendering

Label = Union[str, ActionUnits]
FaceInScene = tuple[Label, PersonParams, float, tuple[float, float, float, float]]

# Crop framing: the crop is centred on face point (0, CROP_CENTER_Y) and spans
# +-CROP_HALF face units, so a face fills it like an aligned FER crop.
CROP_CENTER_Y = 0.25
CROP_HALF = 1.22


def _units_for(label: Label, intensity: float, rng: np.random.Generator | None) -> ActionUnits:
    if isinstance(label, ActionUnits):
        return replace(label.scaled(intensity), lip_side=label.lip_side)
    return expression_units(label, intensity, rng)


def render_face(
    label: Label, params: PersonParams, size: int = 112, intensity: float = 1.0, rng: np.random.Generator | None = None
) -> np.ndarray:
    """A face-centred (size, size, 3) uint8 crop of ``params`` showing ``label`` at ``intensity``.

    ``rng`` drives the per-image nuisance (background clutter, blur, noise,
    expression style); without it a generator seeded by ``params.seed`` is used,
    so the call is deterministic either way. Pose and lighting come from
    ``params`` (see :func:`vary_shot`). ``label`` may also be an
    :class:`ActionUnits` (scaled by ``intensity``) for blended expressions.
    """
    if not isinstance(size, (int, np.integer)) or size < 32:
        raise SyntheticError(f"size must be an int >= 32, got {size!r}")
    if rng is None:
        rng = np.random.default_rng(params.seed)
    # the scene nuisance gets its own stream so it does not depend on the label's style draws
    scene_rng = np.random.default_rng(int(rng.integers(0, 2**63 - 1)))
    au = _units_for(label, intensity, rng)
    rng = scene_rng
    S = size * SUPERSAMPLE
    im = background(rng, S, S)
    d = ImageDraw.Draw(im, "RGBA")
    pose = params.pose
    s = S / (2 * CROP_HALF) * pose.scale
    a = math.radians(pose.roll_deg)
    cx = S * (0.5 + pose.shift_x) + math.sin(a) * s * CROP_CENTER_Y
    cy = S * (0.5 + pose.shift_y) - math.cos(a) * s * CROP_CENTER_Y
    _draw_head(d, _Xform((cx, cy), s, pose.roll_deg, pose.yaw), params, au)
    blur = float(rng.choice([0.0, rng.uniform(0.3, 1.2)], p=[0.5, 0.5]))
    return finish_frame(im, light_fields(params.lighting, size, size), rng, blur=blur, noise=float(rng.uniform(0.0, 7.0)))


def _place(box: tuple[float, float, float, float], params: PersonParams) -> tuple[tuple[float, float], float]:
    x0, y0, x1, y1 = box
    if not (x1 > x0 and y1 > y0):
        raise SyntheticError(f"face box must have x1 > x0 and y1 > y0, got {box}")
    s = min((x1 - x0) / 2, (y1 - y0) / (2 * params.face_aspect)) * SUPERSAMPLE
    return ((x0 + x1) / 2 * SUPERSAMPLE, (y0 + y1) / 2 * SUPERSAMPLE), s


def draw_faces(im: Image.Image, faces: Sequence[FaceInScene], rng: np.random.Generator | None) -> None:
    d = ImageDraw.Draw(im, "RGBA")
    for label, params, intensity, box in faces:
        au = _units_for(label, intensity, rng)
        origin, s = _place(box, params)
        _draw_head(d, _Xform(origin, s, params.pose.roll_deg, params.pose.yaw), params, au)


def render_scene(faces: Sequence[FaceInScene], width: int, height: int, rng: np.random.Generator) -> np.ndarray:
    """A (height, width, 3) uint8 frame with every face drawn on a cluttered background.

    Each entry is ``(label, params, intensity, box_xyxy)``; the face *oval*
    (forehead to chin, cheek to cheek, without hair and ears) is fitted into
    the box (pixels) and centred there, so the box is the face's true
    location. ``params.pose`` roll and yaw apply; its shift/scale do not (the
    box decides). Faces are drawn in list order (later ones occlude earlier
    ones). Lighting, blur and noise are drawn from ``rng``.
    """
    if width < 16 or height < 16:
        raise SyntheticError(f"scene must be at least 16x16 pixels, got {width}x{height}")
    scene_rng = np.random.default_rng(int(rng.integers(0, 2**63 - 1)))
    im = background(scene_rng, width * SUPERSAMPLE, height * SUPERSAMPLE)
    draw_faces(im, faces, rng)
    rng = scene_rng
    _, light = sample_pose_lighting(rng)
    return finish_frame(im, light_fields(light, height, width), rng, blur=float(rng.uniform(0.0, 0.8)), noise=float(rng.uniform(0.0, 5.0)))


def face_to_crop(x: float, y: float) -> tuple[float, float]:
    """Where canonical face point (x, y) (face units) lands in a :func:`render_face` crop
    without pose jitter, as fractions of the crop side."""
    return 0.5 + x / (2 * CROP_HALF), 0.5 + (y - CROP_CENTER_Y) / (2 * CROP_HALF)


def _crop_regions() -> dict[str, tuple[float, float, float, float]]:
    """Feature boxes in a crop (fractions of the side) for the average identity (aspect 1.3)."""

    def box(x0: float, y0: float, x1: float, y1: float) -> tuple[float, float, float, float]:
        a, b = face_to_crop(x0, y0)
        c, d = face_to_crop(x1, y1)
        return (round(a, 3), round(b, 3), round(c, 3), round(d, 3))

    return {
        "forehead": box(-0.6, -0.75, 0.6, -0.45),
        "brows": box(-0.7, -0.45, 0.7, -0.05),
        "eyes": box(-0.62, -0.05, 0.62, 0.2),
        "nose": box(-0.18, 0.2, 0.18, 0.58),
        "mouth": box(-0.48, 0.62, 0.48, 1.05),
    }


CROP_REGIONS.update(_crop_regions())
