"""Procedurally rendered, labelled facial-expression images and videos (nothing is downloaded).

Why: no expression dataset can be fetched in this environment, yet the engine
needs inputs whose *true* labels are known (end-to-end correctness checks, a
small demo CLIPER model trained on CPU). This module draws cartoon-realistic
faces with Pillow (2x supersampled, so edges are anti-aliased) and numpy:

* the 7 canonical classes are drawn from FACS action units (see the cue table
  in ``cliper-method.md``): brows (raise, inner raise, pull down/together),
  eyelids (wide / narrow / tense lower lid), mouth (smile, frown, open "O",
  stretched, pressed thin, curled upper lip), raised cheeks, nose wrinkle,
  forehead / glabella / chin creases;
* nuisance variation: identity (face shape, skin tone, hair style and colour,
  eye spacing, ...), pose (roll, yaw, translation, scale), lighting
  (brightness, contrast, colour cast, gradient), background clutter, noise and
  blur; expressions have an ``intensity`` in 0..1 and per-sample style jitter.

Everything is a pure function of its seed: the same seed gives byte-identical
images, rendered video frames and ground truth.

Outputs:

* :func:`write_image_dataset` – PNG crops + ``labels.parquet``
  (``path`` relative to the parquet's folder, ``label``, ``split`` by held-out
  identity, ``identity``, ``intensity``); :func:`read_image_dataset` resolves
  the paths.
* :func:`write_video_corpus` – H.264 / VP9 videos of one person whose
  expression changes only at segment boundaries, plus ``ground_truth.parquet``
  (one row per segment: ``video_id``, ``video_uri``, ``segment_index``,
  ``start_s``, ``end_s``, ``label``) and ``face_boxes.parquet`` (the drawn face
  box of every frame, for face detection / tracking checks).
"""
from __future__ import annotations

import argparse
import functools
import math
import os
from dataclasses import dataclass, field, fields, replace
from fractions import Fraction
from typing import Sequence, Union

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from .labels import CANONICAL_CLASSES
from .testvideos import CODECS
from .uris import normalize_uri, video_id_for

SUPERSAMPLE = 2  # draw at 2x, then box-downsample: cheap anti-aliasing

# Where the face lands in a render_face crop (fractions of the crop side, no pose
# jitter): x0, y0, x1, y1. Derived from the canonical geometry below; tests and
# downstream code (e.g. region-wise checks) use it instead of guessing.
CROP_REGIONS: dict[str, tuple[float, float, float, float]] = {}


class SyntheticError(ValueError):
    """Bad input to the synthetic renderer (unknown label, bad size, bad timeline, ...)."""


# --------------------------------------------------------------------------- parameters


@dataclass(frozen=True)
class Pose:
    """Head pose in a crop: roll (degrees), yaw (-1..1, shifts inner features sideways),
    shift (fraction of the crop side) and scale (1 = canonical framing)."""

    roll_deg: float = 0.0
    yaw: float = 0.0
    shift_x: float = 0.0
    shift_y: float = 0.0
    scale: float = 1.0


@dataclass(frozen=True)
class Lighting:
    """Global photometric change: out = ((in - 128) * contrast + 128 + brightness) * gain * gradient."""

    brightness: float = 0.0
    contrast: float = 1.0
    gain: tuple[float, float, float] = (1.0, 1.0, 1.0)
    angle: float = 0.0  # direction of the light gradient (radians)
    strength: float = 0.0  # relative brightness change across the image (0..~0.4)


RGB = tuple[int, int, int]


@dataclass(frozen=True)
class FaceParams:
    """One synthetic person (identity) plus the pose and lighting of one shot.

    Identity fields are in *face units* (the face oval has half-width 1).
    ``seed`` drives per-image nuisance (background, noise, style jitter) when
    :func:`render_face` gets no ``rng``.
    """

    seed: int
    face_aspect: float  # oval half-height / half-width
    jaw: float  # 0 = round jaw, 0.4 = narrow, pointed chin
    skin: RGB
    hair_style: int  # 0 short, 1 long, 2 buzz, 3 curly, 4 fringe
    hair_color: RGB
    hairline: float  # y of the hairline (face units, negative = up)
    eye_spacing: float  # x of each eye centre
    eye_size: float
    iris_color: RGB
    brow_color: RGB
    brow_thickness: float
    nose_length: float
    mouth_width: float  # half-width of the mouth at rest
    lip_color: RGB
    lip_fullness: float
    clothing_color: RGB
    pose: Pose = field(default_factory=Pose)
    lighting: Lighting = field(default_factory=Lighting)


_SKIN_PALETTE = np.array(
    [(255, 226, 200), (241, 198, 165), (226, 176, 136), (200, 140, 100), (165, 108, 72), (120, 76, 50), (84, 54, 38)],
    np.float64,
)
_HAIR_PALETTE = np.array(
    [(20, 16, 14), (45, 30, 22), (85, 55, 35), (130, 90, 55), (200, 160, 100), (150, 60, 30), (160, 160, 160), (235, 225, 205)],
    np.float64,
)
_IRIS_PALETTE = np.array([(60, 35, 20), (95, 60, 30), (60, 90, 120), (70, 100, 60), (40, 30, 25)], np.float64)


def _rgb(values: np.ndarray) -> RGB:
    v = np.clip(np.rint(values), 0, 255).astype(int)
    return (int(v[0]), int(v[1]), int(v[2]))


def sample_pose_lighting(rng: np.random.Generator) -> tuple[Pose, Lighting]:
    """A random small pose jitter and lighting for one shot."""
    pose = Pose(
        roll_deg=float(np.clip(rng.normal(0.0, 4.0), -10.0, 10.0)),
        yaw=float(rng.uniform(-0.3, 0.3)),
        shift_x=float(rng.uniform(-0.03, 0.03)),
        shift_y=float(rng.uniform(-0.03, 0.03)),
        scale=float(rng.uniform(0.93, 1.07)),
    )
    lighting = Lighting(
        brightness=float(rng.uniform(-30, 25)),
        contrast=float(rng.uniform(0.7, 1.15)),
        gain=tuple(float(g) for g in rng.uniform(0.88, 1.12, size=3)),  # type: ignore[arg-type]
        angle=float(rng.uniform(0, 2 * math.pi)),
        strength=float(rng.uniform(0.0, 0.4)),
    )
    return pose, lighting


def sample_identity(rng: np.random.Generator) -> FaceParams:
    """A random person with a random pose and lighting (all drawn from ``rng``)."""
    t = rng.uniform(0, len(_SKIN_PALETTE) - 1)
    i = min(int(t), len(_SKIN_PALETTE) - 2)
    skin = (_SKIN_PALETTE[i] * (1 - (t - i)) + _SKIN_PALETTE[i + 1] * (t - i)) * rng.uniform(0.95, 1.05, 3)
    hair = _HAIR_PALETTE[rng.integers(len(_HAIR_PALETTE))] * rng.uniform(0.85, 1.15)
    brow = np.minimum(hair, skin) * 0.55 if hair.mean() > 120 else hair * 0.9
    lip = skin * np.array([0.93, 0.62, 0.62]) + np.array([25, 0, 5])
    clothing = rng.uniform(20, 235, 3)
    pose, lighting = sample_pose_lighting(rng)
    return FaceParams(
        seed=int(rng.integers(0, 2**31 - 1)),
        face_aspect=float(rng.uniform(1.18, 1.42)),
        jaw=float(rng.uniform(0.05, 0.4)),
        skin=_rgb(skin),
        hair_style=int(rng.integers(0, 5)),
        hair_color=_rgb(hair),
        hairline=float(rng.uniform(-0.82, -0.62)),
        eye_spacing=float(rng.uniform(0.36, 0.44)),
        eye_size=float(rng.uniform(0.9, 1.12)),
        iris_color=_rgb(_IRIS_PALETTE[rng.integers(len(_IRIS_PALETTE))] * rng.uniform(0.85, 1.15)),
        brow_color=_rgb(brow),
        brow_thickness=float(rng.uniform(0.05, 0.08)),
        nose_length=float(rng.uniform(0.92, 1.08)),
        mouth_width=float(rng.uniform(0.29, 0.36)),
        lip_color=_rgb(lip),
        lip_fullness=float(rng.uniform(0.8, 1.25)),
        clothing_color=_rgb(clothing),
        pose=pose,
        lighting=lighting,
    )


def vary_shot(params: FaceParams, rng: np.random.Generator) -> FaceParams:
    """The same person in a new shot: fresh pose, lighting and nuisance seed."""
    pose, lighting = sample_pose_lighting(rng)
    return replace(params, pose=pose, lighting=lighting, seed=int(rng.integers(0, 2**31 - 1)))


# --------------------------------------------------------------------------- expressions


@dataclass(frozen=True)
class ActionUnits:
    """Continuous facial actions (0 = rest), loosely after FACS. Signed where it makes sense."""

    brow_raise: float = 0.0  # + whole brow up (AU1+2), - pulled down (AU4)
    brow_inner: float = 0.0  # + inner ends up (AU1), - inner ends down
    brow_together: float = 0.0  # inner ends drawn to the midline (AU4)
    upper_lid: float = 0.0  # + wide (AU5), - heavy / narrowed
    lower_lid: float = 0.0  # lower lid pushed up / tensed (AU6/AU7)
    cheek_raise: float = 0.0  # AU6: raised cheeks, crow's feet, deeper folds
    nose_wrinkle: float = 0.0  # AU9
    nostril_flare: float = 0.0  # AU38
    corner_up: float = 0.0  # + lip corners up (AU12), - down (AU15)
    mouth_width: float = 0.0  # + stretched (AU20), - narrowed / rounded
    jaw_drop: float = 0.0  # AU26/27: mouth opening
    lip_press: float = 0.0  # AU23/24: thin lips
    upper_lip_raise: float = 0.0  # AU10
    teeth: float = 0.0  # upper teeth visible when the mouth is open
    lower_teeth: float = 0.0  # lower teeth visible (bared / stretched mouths)
    forehead_lines: float = 0.0  # horizontal creases from raised brows
    chin_raise: float = 0.0  # AU17: lower lip pushed up, chin wrinkles
    gaze_down: float = 0.0
    glabella: float = 0.0  # vertical creases between the brows
    lip_side: float = 0.0  # -1..1: which side an asymmetric lip raise favours
    blink: float = 0.0  # 0 open .. 1 closed (video only)

    def as_array(self) -> np.ndarray:
        return np.array([getattr(self, f.name) for f in fields(self)], np.float64)

    @classmethod
    def from_array(cls, values: np.ndarray) -> "ActionUnits":
        return cls(*(float(v) for v in values))

    def scaled(self, k: float) -> "ActionUnits":
        return ActionUnits.from_array(self.as_array() * k)

    def blend(self, other: "ActionUnits", t: float) -> "ActionUnits":
        """Linear interpolation: t=0 gives self, t=1 gives other."""
        return ActionUnits.from_array(self.as_array() * (1 - t) + other.as_array() * t)


_PROFILES: dict[str, dict[str, float]] = {
    "neutral": {},
    "happy": dict(cheek_raise=1.0, corner_up=1.0, mouth_width=0.3, jaw_drop=0.3, teeth=1.0, lower_lid=0.6, upper_lid=-0.2),
    "sad": dict(brow_inner=1.0, brow_together=0.5, brow_raise=-0.1, corner_up=-1.0, chin_raise=1.0, upper_lid=-0.45,
                gaze_down=0.7, mouth_width=-0.1),
    "surprise": dict(brow_raise=1.0, brow_inner=0.15, upper_lid=1.0, jaw_drop=1.0, mouth_width=-0.7, forehead_lines=1.0),
    "fear": dict(brow_raise=0.55, brow_inner=0.9, brow_together=0.8, upper_lid=0.9, lower_lid=0.5, mouth_width=0.5,
                 jaw_drop=0.35, corner_up=-0.35, lower_teeth=1.0, forehead_lines=0.5),
    "disgust": dict(nose_wrinkle=1.0, upper_lip_raise=1.0, cheek_raise=0.6, lower_lid=0.7, upper_lid=-0.4, brow_raise=-0.45,
                    brow_together=0.4, corner_up=-0.45, jaw_drop=0.12, teeth=1.0, glabella=0.4),
    "anger": dict(brow_raise=-0.8, brow_inner=-0.8, brow_together=1.0, upper_lid=0.15, lower_lid=0.7, lip_press=1.0,
                  mouth_width=-0.2, glabella=1.0, nostril_flare=1.0, corner_up=-0.15),
}
if set(_PROFILES) != set(CANONICAL_CLASSES):  # labels.py and this table must agree
    raise RuntimeError(f"expression profiles {sorted(_PROFILES)} do not match CANONICAL_CLASSES {CANONICAL_CLASSES}")


def _check_label(label: str) -> str:
    if label not in _PROFILES:
        raise SyntheticError(f"unknown expression label {label!r}; expected one of {list(CANONICAL_CLASSES)}")
    return label


def expression_units(label: str, intensity: float = 1.0, rng: np.random.Generator | None = None) -> ActionUnits:
    """The action units of ``label`` at ``intensity`` (0 = neutral face, 1 = full expression).

    With ``rng`` the expression gets per-sample *style*: every active unit is
    scaled by 0.8..1.15, rest units get a small wobble, and some classes pick a
    variant (closed vs open smile, pressed vs bared anger, which side of the
    upper lip curls in disgust, how far the jaw drops in surprise).
    """
    _check_label(label)
    if not (0.0 <= intensity <= 1.0):
        raise SyntheticError(f"intensity must be in [0, 1], got {intensity}")
    units = dict(_PROFILES[label])
    if rng is not None:
        for k in units:
            units[k] *= float(rng.uniform(0.8, 1.15))
        for k in ("brow_raise", "corner_up", "upper_lid", "mouth_width"):
            units[k] = units.get(k, 0.0) + float(rng.normal(0.0, 0.05))
        if label == "happy" and rng.random() < 0.35:  # closed-mouth smile
            units.update(teeth=0.0, jaw_drop=0.03)
        elif label == "anger" and rng.random() < 0.35:  # bared, clenched teeth
            units.update(lip_press=0.35, jaw_drop=0.14, teeth=1.0, lower_teeth=1.0, mouth_width=0.1)
        elif label == "disgust":
            units["lip_side"] = float(rng.choice([-1.0, 1.0]))
        elif label == "surprise":
            units["jaw_drop"] = float(rng.uniform(0.7, 1.1))
    elif label == "disgust":
        units["lip_side"] = 1.0
    au = ActionUnits(**units)
    return replace(au.scaled(intensity), lip_side=au.lip_side)  # lip_side is a side, not an amount


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


def _oval(p: FaceParams, au: ActionUnits, n: int = 64) -> np.ndarray:
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)
    st = np.sin(t)
    lower = np.clip(st, 0, None)
    x = np.cos(t) * (1 - p.jaw * lower**2 * 0.55) * (1 + 0.04 * np.clip(-st, 0, None))
    y = st * p.face_aspect * (1 + 0.07 * max(0.0, au.jaw_drop) * lower)
    return np.stack([x, y], 1)


def _draw_hair_back(d: ImageDraw.ImageDraw, T: _Xform, p: FaceParams) -> None:
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


def _draw_hair_front(d: ImageDraw.ImageDraw, T: _Xform, p: FaceParams) -> None:
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


def _draw_eye(d: ImageDraw.ImageDraw, T: _Xform, p: FaceParams, au: ActionUnits, side: float, skin: RGB) -> None:
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


def _brow_line(p: FaceParams, au: ActionUnits, side: float) -> tuple[np.ndarray, np.ndarray]:
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


def _draw_brows(d: ImageDraw.ImageDraw, T: _Xform, p: FaceParams, au: ActionUnits) -> None:
    for side in (-1.0, 1.0):
        line, t = _brow_line(p, au, side)
        w = p.brow_thickness * (1.0 - 0.45 * t)
        top = line - np.stack([np.zeros_like(w), w * 0.5], 1)
        bot = line + np.stack([np.zeros_like(w), w * 0.5], 1)
        d.polygon(T(np.concatenate([top, bot[::-1]]), 0.08), fill=p.brow_color)


def _mouth_shape(p: FaceParams, au: ActionUnits) -> dict[str, np.ndarray]:
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


def _draw_mouth(d: ImageDraw.ImageDraw, T: _Xform, p: FaceParams, au: ActionUnits, skin: RGB) -> None:
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


def _draw_nose(d: ImageDraw.ImageDraw, T: _Xform, p: FaceParams, au: ActionUnits, skin: RGB) -> None:
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


def _draw_creases(d: ImageDraw.ImageDraw, T: _Xform, p: FaceParams, au: ActionUnits, skin: RGB) -> None:
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


def _draw_head(d: ImageDraw.ImageDraw, T: _Xform, p: FaceParams, au: ActionUnits) -> None:
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


def _background(rng: np.random.Generator, w: int, h: int) -> Image.Image:
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


def _light_fields(light: Lighting, h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-pixel (mul, add) float32 fields so that lit = raw * mul + add (includes +0.5 for rounding)."""
    ramp = math.cos(light.angle) * np.linspace(-0.5, 0.5, w, dtype=np.float32)[None, :] + math.sin(light.angle) * np.linspace(
        -0.5, 0.5, h, dtype=np.float32
    )[:, None]
    grad = (1.0 + light.strength * ramp)[..., None] * np.asarray(light.gain, np.float32)
    mul = (grad * light.contrast).astype(np.float32)
    add = (grad * (128.0 * (1.0 - light.contrast) + light.brightness) + 0.5).astype(np.float32)
    return mul, add


def _finish(
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
FaceInScene = tuple[Label, FaceParams, float, tuple[float, float, float, float]]

# Crop framing: the crop is centred on face point (0, CROP_CENTER_Y) and spans
# +-CROP_HALF face units, so a face fills it like an aligned FER crop.
CROP_CENTER_Y = 0.25
CROP_HALF = 1.22


def _units_for(label: Label, intensity: float, rng: np.random.Generator | None) -> ActionUnits:
    if isinstance(label, ActionUnits):
        return replace(label.scaled(intensity), lip_side=label.lip_side)
    return expression_units(label, intensity, rng)


def render_face(
    label: Label, params: FaceParams, size: int = 112, intensity: float = 1.0, rng: np.random.Generator | None = None
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
    im = _background(rng, S, S)
    d = ImageDraw.Draw(im, "RGBA")
    pose = params.pose
    s = S / (2 * CROP_HALF) * pose.scale
    a = math.radians(pose.roll_deg)
    cx = S * (0.5 + pose.shift_x) + math.sin(a) * s * CROP_CENTER_Y
    cy = S * (0.5 + pose.shift_y) - math.cos(a) * s * CROP_CENTER_Y
    _draw_head(d, _Xform((cx, cy), s, pose.roll_deg, pose.yaw), params, au)
    blur = float(rng.choice([0.0, rng.uniform(0.3, 1.2)], p=[0.5, 0.5]))
    return _finish(im, _light_fields(params.lighting, size, size), rng, blur=blur, noise=float(rng.uniform(0.0, 7.0)))


def _place(box: tuple[float, float, float, float], params: FaceParams) -> tuple[tuple[float, float], float]:
    x0, y0, x1, y1 = box
    if not (x1 > x0 and y1 > y0):
        raise SyntheticError(f"face box must have x1 > x0 and y1 > y0, got {box}")
    s = min((x1 - x0) / 2, (y1 - y0) / (2 * params.face_aspect)) * SUPERSAMPLE
    return ((x0 + x1) / 2 * SUPERSAMPLE, (y0 + y1) / 2 * SUPERSAMPLE), s


def _draw_faces(im: Image.Image, faces: Sequence[FaceInScene], rng: np.random.Generator | None) -> None:
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
    im = _background(scene_rng, width * SUPERSAMPLE, height * SUPERSAMPLE)
    _draw_faces(im, faces, rng)
    rng = scene_rng
    _, light = sample_pose_lighting(rng)
    return _finish(im, _light_fields(light, height, width), rng, blur=float(rng.uniform(0.0, 0.8)), noise=float(rng.uniform(0.0, 5.0)))


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


# --------------------------------------------------------------------------- image dataset


LABEL_COLUMNS = {"path": "string", "label": "string", "split": "string", "identity": "int32", "intensity": "float32"}


def dataset_identities(n_per_class: int, seed: int, test_fraction: float) -> tuple[list[FaceParams], int]:
    """The people of a labelled face set and the split stride: identity ``i`` is 'test' when ``i % every == 0``.

    Every identity shows every expression (about 2 images each per class), so a
    split by identity puts about ``test_fraction`` of the people - never seen in
    training - in 'test'.
    """
    n_ids = max(5, math.ceil(n_per_class / 2))
    every = max(2, round(1 / test_fraction))
    return [sample_identity(np.random.default_rng([seed, 7, i])) for i in range(n_ids)], every


def write_labels(out_dir: str, rows: dict[str, list], extra: dict[str, str] | None = None) -> str:
    """Write ``out_dir/labels.parquet`` from column lists (:data:`LABEL_COLUMNS` plus ``extra`` name->type)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    types = {**LABEL_COLUMNS, **(extra or {})}
    table = pa.table({name: pa.array(rows[name], type=pa.type_for_alias(t)) for name, t in types.items()})
    out = os.path.join(out_dir, "labels.parquet")
    pq.write_table(table, out)
    return out


def write_image_dataset(out_dir: str, n_per_class: int, seed: int, size: int = 112, test_fraction: float = 0.2) -> str:
    """``n_per_class`` PNG crops per canonical class under ``out_dir/<label>/`` plus ``labels.parquet``.

    Identities are shared across classes (every identity shows every
    expression, in different shots) and the split is *by identity*: about
    ``test_fraction`` of identities are 'test', so test faces are unseen
    people. Columns: ``path`` (relative to ``out_dir``), ``label``, ``split``,
    ``identity``, ``intensity``. Returns the parquet path.
    """
    if n_per_class < 1:
        raise SyntheticError(f"n_per_class must be >= 1, got {n_per_class}")
    if not (0.0 < test_fraction < 1.0):
        raise SyntheticError(f"test_fraction must be in (0, 1), got {test_fraction}")
    identities, every = dataset_identities(n_per_class, seed, test_fraction)
    n_ids = len(identities)
    rows: dict[str, list] = {"path": [], "label": [], "split": [], "identity": [], "intensity": []}
    for ci, label in enumerate(CANONICAL_CLASSES):
        os.makedirs(os.path.join(out_dir, label), exist_ok=True)
        for k in range(n_per_class):
            ident = (k + ci) % n_ids
            rng = np.random.default_rng([seed, 11, ci, k])
            params = vary_shot(identities[ident], rng)
            intensity = 1.0 if label == "neutral" else float(rng.uniform(0.55, 1.0))
            img = render_face(label, params, size=size, intensity=intensity, rng=rng)
            rel = f"{label}/{label}_{k:05d}.png"
            Image.fromarray(img).save(os.path.join(out_dir, rel), compress_level=1)
            rows["path"].append(rel)
            rows["label"].append(label)
            rows["split"].append("test" if ident % every == 0 else "train")
            rows["identity"].append(ident)
            rows["intensity"].append(intensity)
    return write_labels(out_dir, rows)


def read_image_dataset(parquet_path: str):
    """``labels.parquet`` as a pyarrow Table whose ``path`` column holds absolute file paths."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    if not os.path.isfile(parquet_path):
        raise SyntheticError(f"{parquet_path}: no such labels file")
    table = pq.read_table(parquet_path)
    missing = {"path", "label", "split"} - set(table.column_names)
    if missing:
        raise SyntheticError(f"{parquet_path}: missing columns {sorted(missing)}")
    root = os.path.dirname(os.path.abspath(parquet_path))
    paths = [os.path.join(root, p) for p in table.column("path").to_pylist()]
    return table.set_column(table.column_names.index("path"), "path", pa.array(paths, pa.string()))


# --------------------------------------------------------------------------- videos


@dataclass(frozen=True)
class ScriptedVideo:
    """A written synthetic video and its scripted truth.

    ``timeline`` lists (start_s, end_s, label) spans covering [0, duration_s);
    ``face_boxes`` holds the drawn face box (x0, y0, x1, y1, pixels) of every frame.
    """

    uri: str
    codec: str
    fps: float
    duration_s: float
    timeline: tuple[tuple[float, float, str], ...]
    width: int = 0
    height: int = 0
    n_frames: int = 0
    face_boxes: tuple[tuple[float, float, float, float], ...] = ()


_VIDEO_EXTENSIONS = {"h264": (".mp4", ".mkv", ".mov"), "vp9": (".webm", ".mkv")}


def _check_timeline(path: str, timeline: Sequence[tuple[float, float, str]]) -> tuple[tuple[float, float, str], ...]:
    if not timeline:
        raise SyntheticError(f"{path}: empty timeline")
    out = []
    prev_end = 0.0
    for i, item in enumerate(timeline):
        try:
            start, end, label = float(item[0]), float(item[1]), str(item[2])
        except (TypeError, ValueError, IndexError) as exc:
            raise SyntheticError(f"{path}: timeline entry {i} is not (start_s, end_s, label): {item!r}") from exc
        if label not in _PROFILES:
            raise SyntheticError(f"{path}: timeline entry {i} has unknown label {label!r}; expected one of {list(CANONICAL_CLASSES)}")
        if abs(start - prev_end) > 1e-6:
            raise SyntheticError(f"{path}: timeline entry {i} starts at {start}s, expected {prev_end}s (spans must be contiguous from 0)")
        if not end > start:
            raise SyntheticError(f"{path}: timeline entry {i} ends at {end}s, not after its start {start}s")
        out.append((start, end, label))
        prev_end = end
    return tuple(out)


def _smoothstep(x: float) -> float:
    x = min(1.0, max(0.0, x))
    return x * x * (3 - 2 * x)


def write_expression_video(
    path: str,
    timeline: Sequence[tuple[float, float, str]],
    codec: str = "h264",
    fps: float = 25.0,
    size: tuple[int, int] = (256, 256),
    seed: int = 0,
    face_scale: float = 0.5,
    move: bool = True,
    transition_s: float = 0.2,
) -> ScriptedVideo:
    """Encode one synthetic person whose expression follows ``timeline``.

    Each span gets its own style and an intensity of 0.8..1; the face morphs
    from the previous span's expression over the first ``transition_s`` of a
    span (so labels hold from each span's start, a few frames blended).
    ``face_scale`` is the face-oval height as a fraction of the frame height;
    ``move`` adds slow head motion (translation, roll, yaw, scale). Blinks
    happen every few seconds. The background is static clutter, lighting is
    fixed per video, and every frame gets light sensor noise.
    """
    import av

    if codec not in _VIDEO_EXTENSIONS:
        raise SyntheticError(f"{path}: codec must be 'h264' or 'vp9', got {codec!r}")
    ext = os.path.splitext(path)[1].lower()
    if ext not in _VIDEO_EXTENSIONS[codec]:
        raise SyntheticError(f"{path}: a {codec} video needs one of the extensions {list(_VIDEO_EXTENSIONS[codec])}, got {ext!r}")
    W, H = int(size[0]), int(size[1])
    if W < 32 or H < 32 or W % 2 or H % 2:
        raise SyntheticError(f"{path}: frame size must be even and >= 32, got {W}x{H}")
    if not (0.1 <= face_scale <= 0.9):
        raise SyntheticError(f"{path}: face_scale must be in [0.1, 0.9], got {face_scale}")
    if not fps > 0:
        raise SyntheticError(f"{path}: fps must be > 0, got {fps}")
    spans = _check_timeline(path, timeline)
    duration = spans[-1][1]
    n_frames = int(round(duration * fps))
    if n_frames < 1:
        raise SyntheticError(f"{path}: timeline of {duration}s holds no frame at {fps} fps")

    rng = np.random.default_rng([seed, 23])
    person = sample_identity(rng)
    span_units = [expression_units(lbl, float(rng.uniform(0.8, 1.0)), rng) for _, _, lbl in spans]
    background = _background(rng, W * SUPERSAMPLE, H * SUPERSAMPLE)
    _, light = sample_pose_lighting(rng)
    light_fields = _light_fields(replace(light, strength=light.strength * 0.6), H, W)
    phases = rng.uniform(0, 2 * math.pi, 6)
    periods = rng.uniform(3.0, 7.0, 6)
    blinks, t = [], float(rng.uniform(0.5, 3.0))
    while t < duration:
        blinks.append(t)
        t += float(rng.uniform(2.0, 5.0))
    blinks_arr = np.array(blinks) if blinks else np.zeros(0)
    noise_rng = np.random.default_rng([seed, 29])
    # a small bank of sensor-noise fields (std 2), picked per frame: fresh noise per frame costs more than drawing the face
    noise_bank = (noise_rng.random((6, H, W, 3), dtype=np.float32) - 0.5) * (2.0 * math.sqrt(12.0))

    boxes: list[tuple[float, float, float, float]] = []
    encoder, _ = CODECS[codec]
    with av.open(path, mode="w") as container:
        stream = container.add_stream(encoder, rate=Fraction(fps).limit_denominator(1001))
        stream.width, stream.height = W, H
        stream.pix_fmt = "yuv420p"
        if codec == "h264":
            stream.options = {"crf": "20", "preset": "veryfast", "g": str(max(1, int(fps * 2)))}
        else:
            stream.options = {"crf": "24", "b:v": "0", "deadline": "realtime", "cpu-used": "8", "g": str(max(1, int(fps * 2)))}
        j = 0
        for i in range(n_frames):
            t = i / fps
            while j + 1 < len(spans) and t >= spans[j][1] - 1e-9:
                j += 1
            au = span_units[j]
            if j > 0 and transition_s > 0 and t - spans[j][0] < transition_s:
                au = span_units[j - 1].blend(au, _smoothstep((t - spans[j][0]) / transition_s))
            au = au.scaled(0.92 + 0.08 * math.sin(2 * math.pi * t / 2.3 + phases[0]))
            au = replace(au, lip_side=span_units[j].lip_side)
            if blinks_arr.size:
                dt = np.abs(blinks_arr - t).min()
                au = replace(au, blink=float(max(0.0, 1.0 - dt / 0.09)))
            wob = [math.sin(2 * math.pi * t / periods[k] + phases[k]) if move else 0.0 for k in range(6)]
            bh = face_scale * H * (1 + 0.06 * wob[0])
            bw = bh / person.face_aspect
            cx = min(max(W * (0.5 + 0.12 * wob[1]), bw / 2), W - bw / 2)
            cy = min(max(H * (0.47 + 0.06 * wob[2]), bh / 2 + 0.06 * H), H - bh / 2)
            box = (cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2)
            params = replace(person, pose=Pose(roll_deg=6.0 * wob[3], yaw=0.25 * wob[4]))
            im = background.copy()
            _draw_faces(im, [(au, params, 1.0, box)], None)
            frame = _finish(im, light_fields, noise_rng, blur=0.0, noise=noise_bank[int(noise_rng.integers(len(noise_bank)))])
            boxes.append(tuple(round(v, 2) for v in box))  # type: ignore[arg-type]
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return ScriptedVideo(
        uri=normalize_uri(path), codec=codec, fps=float(fps), duration_s=n_frames / fps, timeline=spans,
        width=W, height=H, n_frames=n_frames, face_boxes=tuple(boxes),
    )


def _random_timeline(rng: np.random.Generator, segment_seconds: float, min_spans: int, max_spans: int) -> list[tuple[float, float, str]]:
    n = int(rng.integers(min_spans, max_spans + 1))
    out, t, prev = [], 0.0, None
    for _ in range(n):
        choices = [c for c in CANONICAL_CLASSES if c != prev]
        label = str(rng.choice(choices))
        length = int(rng.integers(1, 3)) * segment_seconds  # 1-2 segments (2-4 s by default)
        out.append((round(t, 6), round(t + length, 6), label))
        t += length
        prev = label
    return out


def write_video_corpus(
    out_dir: str,
    n_videos: int,
    seed: int,
    segment_seconds: float = 2.0,
    codecs: Sequence[str] = ("h264", "vp9"),
    size: tuple[int, int] = (256, 256),
    fps: float = 25.0,
    min_spans: int = 3,
    max_spans: int = 5,
) -> str:
    """``n_videos`` scripted videos in ``out_dir`` plus ``ground_truth.parquet``; returns its path.

    Each video is ``min_spans..max_spans`` spans of 1-2 segments, each span a
    random label different from the one before, so the expression changes
    only at multiples of ``segment_seconds``. Ground truth has one row per
    segment (``video_id``, ``video_uri``, ``segment_index``, ``start_s``,
    ``end_s``, ``label``) with ``video_id``/``video_uri`` as the engine's
    listing computes them. ``face_boxes.parquet`` (``video_uri``,
    ``frame_index``, ``t_s``, ``x0``..``y1`` pixels) is written alongside.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    if n_videos < 1:
        raise SyntheticError(f"n_videos must be >= 1, got {n_videos}")
    if not segment_seconds > 0:
        raise SyntheticError(f"segment_seconds must be > 0, got {segment_seconds}")
    if not codecs or any(c not in ("h264", "vp9") for c in codecs):
        raise SyntheticError(f"codecs must be a non-empty list of 'h264'/'vp9', got {codecs!r}")
    if not (1 <= min_spans <= max_spans):
        raise SyntheticError(f"need 1 <= min_spans <= max_spans, got {min_spans}, {max_spans}")
    if abs(segment_seconds * fps - round(segment_seconds * fps)) > 1e-6:
        raise SyntheticError(f"segment_seconds * fps must be a whole number of frames, got {segment_seconds} * {fps}")
    os.makedirs(out_dir, exist_ok=True)
    gt: dict[str, list] = {"video_id": [], "video_uri": [], "segment_index": [], "start_s": [], "end_s": [], "label": []}
    fb: dict[str, list] = {"video_uri": [], "frame_index": [], "t_s": [], "x0": [], "y0": [], "x1": [], "y1": []}
    for i in range(n_videos):
        codec = codecs[i % len(codecs)]
        rng = np.random.default_rng([seed, 31, i])
        timeline = _random_timeline(rng, segment_seconds, min_spans, max_spans)
        path = os.path.join(out_dir, f"synth_{i:04d}{CODECS[codec][1]}")
        video = write_expression_video(path, timeline, codec=codec, fps=fps, size=size, seed=int(rng.integers(0, 2**31 - 1)),
                                       face_scale=float(rng.uniform(0.4, 0.6)), move=True)
        vid = video_id_for(video.uri)
        for start, end, label in video.timeline:
            k0, k1 = int(round(start / segment_seconds)), int(round(end / segment_seconds))
            for k in range(k0, k1):
                gt["video_id"].append(vid)
                gt["video_uri"].append(video.uri)
                gt["segment_index"].append(k)
                gt["start_s"].append(k * segment_seconds)
                gt["end_s"].append((k + 1) * segment_seconds)
                gt["label"].append(label)
        for f, box in enumerate(video.face_boxes):
            fb["video_uri"].append(video.uri)
            fb["frame_index"].append(f)
            fb["t_s"].append(f / fps)
            for key, v in zip(("x0", "y0", "x1", "y1"), box):
                fb[key].append(v)
    gt_table = pa.table(
        {
            "video_id": pa.array(gt["video_id"], pa.string()),
            "video_uri": pa.array(gt["video_uri"], pa.string()),
            "segment_index": pa.array(gt["segment_index"], pa.int32()),
            "start_s": pa.array(gt["start_s"], pa.float64()),
            "end_s": pa.array(gt["end_s"], pa.float64()),
            "label": pa.array(gt["label"], pa.string()),
        }
    )
    fb_table = pa.table(
        {
            "video_uri": pa.array(fb["video_uri"], pa.string()),
            "frame_index": pa.array(fb["frame_index"], pa.int32()),
            "t_s": pa.array(fb["t_s"], pa.float64()),
            **{k: pa.array(fb[k], pa.float32()) for k in ("x0", "y0", "x1", "y1")},
        }
    )
    pq.write_table(fb_table, os.path.join(out_dir, "face_boxes.parquet"))
    out = os.path.join(out_dir, "ground_truth.parquet")
    pq.write_table(gt_table, out)
    return out


# --------------------------------------------------------------------------- CLI


def parse_size(text: str) -> tuple[int, int]:
    """``WIDTHxHEIGHT`` -> ``(width, height)`` for argparse (``type=parse_size``)."""
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"size must look like WIDTHxHEIGHT (e.g. 256x256), got {text!r}") from exc
    return w, h


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m cliper_batch.synthetic",
        description="Write a synthetic facial-expression video corpus with ground truth (and optionally a labelled image set).",
    )
    p.add_argument("--out", required=True, help="output folder (videos, ground_truth.parquet, face_boxes.parquet)")
    p.add_argument("--videos", type=int, default=4, help="number of videos")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--images-per-class", type=int, default=0, help="also write N face crops per class under OUT/images")
    p.add_argument("--image-size", type=int, default=112, help="side of the face crops")
    p.add_argument("--size", type=parse_size, default=(256, 256), help="video frame WIDTHxHEIGHT")
    p.add_argument("--fps", type=float, default=25.0)
    p.add_argument("--segment-seconds", type=float, default=2.0)
    p.add_argument("--min-spans", type=int, default=3)
    p.add_argument("--max-spans", type=int, default=5)
    a = p.parse_args(argv)
    try:
        if a.videos > 0:
            gt = write_video_corpus(a.out, a.videos, a.seed, segment_seconds=a.segment_seconds, size=a.size, fps=a.fps,
                                    min_spans=a.min_spans, max_spans=a.max_spans)
            print(gt)
        if a.images_per_class > 0:
            print(write_image_dataset(os.path.join(a.out, "images"), a.images_per_class, a.seed, size=a.image_size))
    except SyntheticError as exc:
        p.error(str(exc))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
