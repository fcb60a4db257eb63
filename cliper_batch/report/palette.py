"""Class colours shared by the report's charts and tables and the annotated video (Vega's "tableau10")."""
from __future__ import annotations

TABLEAU10 = ["#4c78a8", "#f58518", "#e45756", "#72b7b2", "#54a24b", "#eeca3b", "#b279a2", "#ff9da6", "#9d755d", "#bab0ac"]


def colours_for(classes: list[str]) -> dict[str, str]:
    """Class -> ``#rrggbb``, by the class's position in the model's class list."""
    return {c: TABLEAU10[i % len(TABLEAU10)] for i, c in enumerate(classes)}
