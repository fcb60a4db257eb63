"""Canonical expression classes and the facial-action prompts used for zero-shot descriptors.

Every dataset and checkpoint maps to classes *by name*, never by index.
"""
from __future__ import annotations

CANONICAL_CLASSES: tuple[str, ...] = (
    "neutral",
    "happy",
    "sad",
    "surprise",
    "fear",
    "disgust",
    "anger",
)

# Facial-action cues per class (FACS AUs in the reference). Each cue becomes
# one descriptor; a class score is the mean over its descriptors (CLIPER's rule).
FACIAL_ACTION_CUES: dict[str, tuple[str, ...]] = {
    "happy": (
        "cheeks lifted and lip corners drawn up and back",
        "creases at the outer eye corners",
        "lower eyelids pushed up by the cheeks",
        "a smile with teeth visible",
        "a broad smile",
    ),
    "sad": (
        "inner ends of the brows raised and pinched together",
        "lip corners pulled down",
        "a raised, wrinkled chin",
        "heavy upper eyelids and a lowered gaze",
        "a sorrowful downturned mouth",
    ),
    "surprise": (
        "brows arched high",
        "upper eyelids lifted to show white above the iris",
        "jaw dropped with a slack, open mouth",
        "long horizontal forehead lines",
        "wide open eyes and mouth",
    ),
    "fear": (
        "brows raised and drawn together",
        "wide eyes with tense lower eyelids",
        "lips stretched sideways",
        "a slightly open, tense mouth",
        "a frightened stare",
    ),
    "anger": (
        "brows pulled down and together",
        "a hard stare with tightened eyelids",
        "lips pressed thin",
        "flared nostrils",
        "bared, clenched teeth",
    ),
    "disgust": (
        "a scrunched nose",
        "upper lip curled up",
        "lower lip pushed down",
        "cheeks raised so the eyes narrow",
        "a repulsed grimace",
    ),
    "neutral": (
        "a smooth, relaxed brow",
        "eyelids at rest",
        "lips closed and level",
        "no visible muscle tension",
        "a calm, expressionless face",
    ),
    "contempt": (
        "one lip corner tightened and pulled up",
        "a lopsided smirk",
        "chin up, looking down the nose",
        "a one-sided sneer",
        "a scornful half smile",
    ),
}

PROMPT_TEMPLATE = "a photo of a face with {cue}."


def validate_classes(classes: list[str] | tuple[str, ...]) -> tuple[str, ...]:
    """Check a class list: non-empty, unique, lowercase identifiers usable as ``p_<class>`` columns."""
    classes = tuple(classes)
    if not classes:
        raise ValueError("class list is empty")
    if len(set(classes)) != len(classes):
        raise ValueError(f"duplicate class names in {classes}")
    for name in classes:
        if not name or not name.replace("_", "").isalnum() or name.lower() != name:
            raise ValueError(
                f"class name {name!r} must be lowercase letters, digits or '_' (it becomes column p_{name})"
            )
    return classes


def prompts_for(classes: tuple[str, ...], per_class: int | None = None) -> list[list[str]]:
    """Descriptor prompts per class. Unknown classes fall back to 'a photo of a {name} face'."""
    out: list[list[str]] = []
    for name in classes:
        cues = FACIAL_ACTION_CUES.get(name)
        if cues is None:
            prompts = [f"a photo of a {name.replace('_', ' ')} face."]
        else:
            prompts = [PROMPT_TEMPLATE.format(cue=c) for c in cues]
        if per_class is not None:
            if per_class < 1:
                raise ValueError("per_class must be >= 1")
            # cycle so every class has exactly per_class descriptors
            prompts = [prompts[i % len(prompts)] for i in range(per_class)]
        out.append(prompts)
    return out
