"""The elementwise functions a forward graph may use, each with the derivative torch uses.

Each is an opaque SymPy function: the engine never expands it, it only differentiates it by
its rule (``fdiff``), and the exact proofs treat each application as an atom.  The smooth ones
carry a ``reference`` (the same function written with SymPy's own exp, log, tanh), and their
rule is proved against the reference's derivative (:mod:`derive.proofs.rules`) before any
proof uses it:

    exp'(u) = exp(u)                      log'(u) = 1/u
    sigmoid(u) = 1/(1 + exp(-u)),         sigmoid'(u) = sigmoid(u)*(1 - sigmoid(u))
    tanh'(u) = 1 - tanh(u)**2             softplus(u) = log(1 + exp(u)), softplus'(u) = sigmoid(u)

The non-smooth ones follow torch's conventions, which are rules, not identities:

    |u|' = sign(u)   (0 at u = 0)         sign'(u) = 0
    clamp_min(a, lo) = max(a, lo):  d/da = [a >= lo],  d/dlo = [a < lo]
    clamp_max(a, hi) = min(a, hi):  d/da = [a <= hi],  d/dhi = [a > hi]
    stop_gradient(f) = f, with derivative 0

(torch.maximum splits the gradient 1/2, 1/2 where its arguments tie; a graph's max follows
clamp_min's rule, which gives it all to the first argument.  torch's softplus is linear
above its threshold 20, where log(1 + exp(u)) differs from u by less than 2.1e-9.)
"""
from __future__ import annotations

import sympy as sp

from ..math.algebra import Step


class StopGrad(sp.Function):
    """stop_gradient(f): the value of f, with derivative 0 (torch's ``detach``)."""

    nargs = 1

    def fdiff(self, argindex=1):
        return sp.Integer(0)


class ClampMin(sp.Function):
    """max(a, lo) with torch's rule at the kink: d/da = 1 where a >= lo (clamp_min)."""

    nargs = 2

    @classmethod
    def eval(cls, a, lo):
        if a.is_Number and lo.is_Number:
            return sp.Max(a, lo)
        return None

    def fdiff(self, argindex=1):
        a, lo = self.args
        return Step(a - lo, 1) if argindex == 1 else Step(lo - a, 0)

    def branches(self):
        """(condition, value where it is >= 0, value where it is < 0)."""
        a, lo = self.args
        return a - lo, a, lo


class ClampMax(sp.Function):
    """min(a, hi) with torch's rule at the kink: d/da = 1 where a <= hi (clamp_max)."""

    nargs = 2

    @classmethod
    def eval(cls, a, hi):
        if a.is_Number and hi.is_Number:
            return sp.Min(a, hi)
        return None

    def fdiff(self, argindex=1):
        a, hi = self.args
        return Step(hi - a, 1) if argindex == 1 else Step(a - hi, 0)

    def branches(self):
        """(condition, value where it is >= 0, value where it is < 0)."""
        a, hi = self.args
        return hi - a, a, hi


def clip(a: sp.Expr, lo: sp.Expr, hi: sp.Expr) -> sp.Expr:
    """torch.clamp(a, lo, hi)."""
    return ClampMax(ClampMin(a, lo), hi)


class Smooth(sp.Function):
    """A smooth elementwise function of one argument: ``rule`` gives f'(u) in f itself."""

    nargs = 1
    latex_name = ""

    @classmethod
    def reference(cls, u: sp.Expr) -> sp.Expr:
        """The same function in SymPy's own terms (its rule is proved against this)."""
        raise NotImplementedError

    @classmethod
    def rule(cls, u: sp.Expr) -> sp.Expr:
        """f'(u), written with f and the other functions of this module."""
        raise NotImplementedError

    @classmethod
    def eval(cls, u):
        if u.is_Number:
            return cls.reference(u)
        return None

    def fdiff(self, argindex=1):
        return self.rule(self.args[0])

    def _latex(self, printer, exp=None):
        body = rf"{self.latex_name}\left({printer._print(self.args[0])}\right)"
        return body if exp is None else rf"{self.latex_name}^{{{exp}}}\left({printer._print(self.args[0])}\right)"


class Exp(Smooth):
    """exp(u)."""

    latex_name = r"\exp"

    @classmethod
    def reference(cls, u):
        return sp.exp(u)

    @classmethod
    def rule(cls, u):
        return Exp(u)


class Log(Smooth):
    """log(u), the natural logarithm (u > 0)."""

    latex_name = r"\log"

    @classmethod
    def reference(cls, u):
        return sp.log(u)

    @classmethod
    def rule(cls, u):
        return 1 / u


class Sigmoid(Smooth):
    """sigmoid(u) = 1/(1 + exp(-u))."""

    latex_name = r"\sigma"

    @classmethod
    def reference(cls, u):
        return 1 / (1 + sp.exp(-u))

    @classmethod
    def rule(cls, u):
        return Sigmoid(u) * (1 - Sigmoid(u))


class Tanh(Smooth):
    """tanh(u)."""

    latex_name = r"\tanh"

    @classmethod
    def reference(cls, u):
        return sp.tanh(u)

    @classmethod
    def rule(cls, u):
        return 1 - Tanh(u) ** 2


class Softplus(Smooth):
    """softplus(u) = log(1 + exp(u))."""

    latex_name = r"\operatorname{softplus}"

    @classmethod
    def reference(cls, u):
        return sp.log(1 + sp.exp(u))

    @classmethod
    def rule(cls, u):
        return Sigmoid(u)


class Sign(sp.Function):
    """sign(u) in {-1, 0, 1}, with derivative 0 (torch's)."""

    nargs = 1

    @classmethod
    def eval(cls, u):
        if u.is_Number:
            return sp.sign(u)
        return None

    def fdiff(self, argindex=1):
        return sp.Integer(0)

    def _latex(self, printer, exp=None):
        body = rf"\operatorname{{sign}}\left({printer._print(self.args[0])}\right)"
        return body if exp is None else rf"{body}^{{{exp}}}"


class Absolute(sp.Function):
    """|u|, with torch's derivative sign(u) (0 at u = 0)."""

    nargs = 1

    @classmethod
    def eval(cls, u):
        if u.is_Number:
            return sp.Abs(u)
        return None

    def fdiff(self, argindex=1):
        return Sign(self.args[0])

    def _latex(self, printer, exp=None):
        body = rf"\left|{printer._print(self.args[0])}\right|"
        return body if exp is None else rf"{body}^{{{exp}}}"


SMOOTH = (Exp, Log, Sigmoid, Tanh, Softplus)
#: every function a graph may use; the evaluators give each its numeric meaning
FUNCTIONS = (*SMOOTH, Sign, Absolute, ClampMin, ClampMax, StopGrad)


def from_sympy(expr: sp.Expr) -> sp.Expr:
    """SymPy's exp, log, tanh, Abs, sign, Max and Min (two arguments) as this module's functions,
    so that a graph written with ``sp.exp`` gets the same rules as one written with ``g.exp``."""
    expr = expr.replace(lambda e: isinstance(e, sp.exp), lambda e: Exp(e.args[0]))
    for theirs, ours in ((sp.log, Log), (sp.tanh, Tanh), (sp.Abs, Absolute), (sp.sign, Sign)):
        expr = expr.replace(lambda e, t=theirs: isinstance(e, t) and len(e.args) == 1,
                            lambda e, o=ours: o(e.args[0]))
    for theirs, ours in ((sp.Max, ClampMin), (sp.Min, ClampMax)):
        expr = expr.replace(lambda e, t=theirs: isinstance(e, t) and len(e.args) == 2,
                            lambda e, o=ours: o(*e.args))
    return expr
