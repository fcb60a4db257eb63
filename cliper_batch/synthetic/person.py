"""A synthetic person: identity, pose and lighting, and the facial action units of each expression.

Pure data and seeded sampling (no drawing): :func:`sample_identity`,
:func:`vary_shot`, :func:`sample_pose_lighting` and :func:`expression_units`
(the 7 canonical classes as FACS action units, with an ``intensity``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, fields, replace

import numpy as np

from ..labels import CANONICAL_CLASSES


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
class PersonParams:
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


def sample_identity(rng: np.random.Generator) -> PersonParams:
    """A random person with a random pose and lighting (all drawn from ``rng``)."""
    t = rng.uniform(0, len(_SKIN_PALETTE) - 1)
    i = min(int(t), len(_SKIN_PALETTE) - 2)
    skin = (_SKIN_PALETTE[i] * (1 - (t - i)) + _SKIN_PALETTE[i + 1] * (t - i)) * rng.uniform(0.95, 1.05, 3)
    hair = _HAIR_PALETTE[rng.integers(len(_HAIR_PALETTE))] * rng.uniform(0.85, 1.15)
    brow = np.minimum(hair, skin) * 0.55 if hair.mean() > 120 else hair * 0.9
    lip = skin * np.array([0.93, 0.62, 0.62]) + np.array([25, 0, 5])
    clothing = rng.uniform(20, 235, 3)
    pose, lighting = sample_pose_lighting(rng)
    return PersonParams(
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


def vary_shot(params: PersonParams, rng: np.random.Generator) -> PersonParams:
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
