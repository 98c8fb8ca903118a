"""What to try when a proof fails: the message names the identity and the m, and then this.

* a second-order identity: ``--order 1`` proves and writes the first order alone;
* an identity that held for the smaller m: a smaller ``--max-m`` proves less, and says so;
* a graph with non-smooth functions: the nodes whose derivative rule is a convention
  (clamps, max/min, abs, sign, stop_gradient), where a wrong rule shows first.
"""
from __future__ import annotations

from ..forward.functions import Absolute, ClampMax, ClampMin, Sign, StopGrad
from ..forward.model import Model
from .first import ProofError

RULES = {ClampMin: "max/clamp_min", ClampMax: "min/clamp_max", Absolute: "abs", Sign: "sign",
         StopGrad: "stop_gradient"}


def ruled_nodes(model: Model) -> list[str]:
    """'node (function)' for every node or abbreviation whose definition uses a non-smooth rule
    (a node's own, not those of the abbreviations written out in it)."""
    in_lets = set().union(*(let.definition.atoms(*RULES) for let in model.lets))
    out = []
    for n in model.lets + model.nodes:
        own = n.definition.atoms(*RULES) - (set() if n in model.lets else in_lets)
        kinds = sorted({RULES[type(f)] for f in own})
        if kinds:
            out.append(f"{n.symbol.name!r} ({', '.join(kinds)})")
    return out


def explained(e: ProofError, model: Model, order: int) -> ProofError:
    """``e`` with what to try appended."""
    tries = []
    if order == 2 and e.claim.startswith("second order"):
        tries.append("--order 1 (a proved first order, without the second)")
    if e.size.startswith("m=") and int(e.size[2:]) > 2:
        tries.append(f"--max-m {int(e.size[2:]) - 1} (it held for every smaller m)")
    nodes = ruled_nodes(model)
    if nodes:
        tries.append("the derivative rule of node " + ", ".join(nodes))
    if not tries:
        return e
    return ProofError(e.variant, e.claim, e.size, "try " + "; or ".join(tries))
