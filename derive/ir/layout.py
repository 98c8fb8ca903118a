"""The iteration space of a layout, decided once: which loop letter each axis of the working view
gets, and how each kind of value is indexed.

The working view of every entry is laid onto at most four loop letters, in memory order:

    o  reduced axes before the group axes (the batch axis of batch norm)
    g  the group axes: one mean and one variance for each g
    k  reduced axes that the parameters span (layer norm's features, group norm's channels)
    i  reduced axes after the group axes (H and W)

A per-element value is indexed by every letter; a per-group value by g; a parameter that is one
value per group by p, the parameter row of group g (g % P, P parameter rows); a parameter that
varies inside a group by (p, k).  Loop backends print these (their runtime lays an array onto the
letters); the vectorized backends broadcast instead and need none of it.
"""
from __future__ import annotations

from dataclasses import dataclass

#: the letter patterns the loop backends lay out
PATTERNS = ("og", "ogi", "gk", "gki", "gi")


class LayoutError(ValueError):
    """A layout no loop backend can iterate."""


@dataclass(frozen=True)
class Loops:
    letters: str          #: e.g. "og" for batch norm over (N, D)
    family: str           #: "columns" (a group is a column: pattern og) or "rows" (a group is contiguous)

    @property
    def reduced(self) -> str:
        """The letters a group's elements run over, in loop order."""
        return "".join(letter for letter in self.letters if letter != "g")

    @property
    def varies(self) -> bool:
        """True when the parameters vary inside a group (a k axis)."""
        return "k" in self.letters

    @property
    def element_index(self) -> str:
        return ", ".join(self.letters)

    @property
    def dims(self) -> str:
        return ", ".join(letter.upper() for letter in self.letters)


def loops(spec) -> Loops:
    """The loop letters of ``spec``'s working view."""
    ndim = (spec.ndim or 2) + (1 if spec.groups else 0)
    reduced = {a % ndim for a in spec.reduce_axes}
    params = {a % ndim for a in spec.param_axes}
    first_group = min((a for a in range(ndim) if a not in reduced), default=ndim)
    letters = ""
    for a in range(ndim):
        letter = ("g" if a not in reduced else "k" if a in params
                  else "o" if a < first_group else "i")
        if not letters.endswith(letter):
            letters += letter
    if letters not in PATTERNS or (("k" in letters) != spec.gamma_varies):
        raise LayoutError(f"{spec.name}: no loop layout for the axis letters {letters!r} "
                          f"(laid out: {', '.join(PATTERNS)})")
    return Loops(letters, "columns" if letters == "og" else "rows")
