"""Our notation, printed by SymPy: LaTeX for the documents, plain text for the terminal.

Both printers print the derivation's own expressions (the proved ones); nothing
is typed by hand.  Before printing, :func:`shown` rewrites an expression into
display form:

* a per-element symbol ``e`` (an :class:`~derive.algebra.Elem`) becomes
  ``e_i`` -- or ``e_j``, ``e_k``, whichever index the caller asks for;
* a reduction ``BatchSum(f)`` becomes SymPy's own ``Sum(f_k, (k, 1, m))`` with
  the summation index k, so that SymPy's rules for brackets around sums apply;
* every other symbol becomes its name in our notation (var -> sigma^2, std ->
  sigma_eps, dout -> dy, ...), from :data:`NAMES`.

A display symbol (:class:`Shown`) carries its final LaTeX or text as its name.
"""
from __future__ import annotations

from dataclasses import dataclass

import sympy as sp
from sympy.printing.latex import LatexPrinter
from sympy.printing.str import StrPrinter

from ..math.algebra import BatchSum, Elem, M, ParamSum

#: symbol name -> (rank, LaTeX, plain text).  The rank orders factors and terms the way
#: the textbook writes them (m dy_i, gamma xhat_i + beta, x_k - mu, sigma^2 + eps).
#: A name ``base_i`` (the proofs' column copies x_i, xhat_i, gamma_i) is printed as
#: base with the subscript i.
NAMES: dict[str, tuple[int, str, str]] = {
    "m": (0, "m", "m"), "N": (0, "N", "N"), "i": (0, "i", "i"), "j": (0, "j", "j"),
    "k": (0, "k", "k"), "n": (0, "n", "n"),
    "gamma": (1, r"\gamma", "\u03b3"),
    "dout": (2, "dy", "dy"), "dxhat": (2, r"d\hat{x}", "dx\u0302"), "dx": (2, "dx", "dx"),
    "dvar": (2, r"d\sigma^{2}", "d\u03c3\u00b2"), "dmu": (2, r"d\mu", "d\u03bc"),
    "dgamma": (2, r"d\gamma", "d\u03b3"), "dbeta": (2, r"d\beta", "d\u03b2"),
    "db": (2, "db", "db"), "L": (2, "L", "L"),
    "dxnaive": (2, r"dx^{\mathrm{naive}}", "dx^naive"), "dbnaive": (2, r"db^{\mathrm{naive}}", "db^naive"),
    "dxseed": (2, r"dx^{\mathrm{seed}}", "dx^seed"), "dmuseed": (2, r"d\mu^{\mathrm{seed}}", "d\u03bc^seed"),
    "dxinside": (2, r"dx^{\mathrm{inside}}", "dx^inside"),
    "dxoutside": (2, r"dx^{\mathrm{outside}}", "dx^outside"),
    "x": (3, "x", "x"), "xhat": (3, r"\hat{x}", "x\u0302"), "out": (3, "y", "y"),
    "u": (3, "u", "u"), "t": (3, "t", "t"), "b": (4, "b", "b"),
    "mu": (5, r"\mu", "\u03bc"), "var": (5, r"\sigma^{2}", "\u03c3\u00b2"),
    "std": (5, r"\sigma_{\varepsilon}", "\u03c3_\u03b5"),
    "r": (5, "r", "r"), "eps": (6, r"\varepsilon", "\u03b5"), "beta": (7, r"\beta", "\u03b2"),
    # one rank's part of the batch (derive.distributed): its count and statistics
    "m_r": (0, "m_{r}", "m_r"), "mu_r": (5, r"\mu_{r}", "\u03bc_r"),
    "var_r": (5, r"\sigma^{2}_{r}", "\u03c3\u00b2_r"),
}

TEX, TEXT = 1, 2
COPY_INDICES = ("i", "j")


class Shown(sp.Symbol):
    """A symbol in display form, named ``rank:printed`` so that SymPy's ordering follows the rank."""

    @property
    def printed(self) -> str:
        return self.name.partition(":")[2]


def entry_of(name: str) -> tuple[int, str, str]:
    """(rank, LaTeX, text) of a name: from :data:`NAMES`, else built from the name itself.

    A graph may name its nodes freely (xc, sq, den, r_max, running_var): a name that
    NAMES does not know is printed upright (mathrm); ``base_sub`` gets the subscript
    sub when base prints without scripts of its own (r_max -> r with subscript max);
    ``d`` followed by a known name is that name's gradient (dstd -> d sigma_eps).
    """
    if name in NAMES:
        return NAMES[name]
    if name.startswith("bar_") and len(name) > 4:  # an adjoint of the second order (derive.second_order)
        _, tex, text = entry_of(name[4:])
        return 2, rf"\overline{{{tex}}}", f"{text}\u0304"
    if name.startswith("sum_") and len(name) > 4:  # a named group sum: sum_dout_xhat
        factors = [entry_of(f) for f in factor_names(name[4:])]
        return 5, r"\Sigma_{" + r"\,".join(f[1] for f in factors) + "}", "\u03a3(" + "\u00b7".join(f[2] for f in factors) + ")"
    if name.startswith("d") and name[1:] in NAMES:
        _, tex, text = NAMES[name[1:]]
        return 2, f"d{tex}", f"d{text}"
    base, _, sub = name.partition("_")
    if sub and base:
        rank, tex, text = entry_of(base)
        if "_" not in tex and "^" not in tex:
            upright = sub.replace("_", r"\_")
            return rank, rf"{tex}_{{\mathrm{{{upright}}}}}", f"{text}_{sub}"
    tex = name if len(name) == 1 else r"\mathrm{" + name.replace("_", r"\_") + "}"
    return 4, tex, name


def factor_names(joined: str) -> list[str]:
    """The factors of a group sum's name (dout_xhat -> dout, xhat; bar_dx_out -> bar_dx, out),
    each as long as a known name allows."""
    tokens, out, i = joined.split("_"), [], 0
    known = lambda n: n in NAMES or (n[:1] == "d" and n[1:] in NAMES) or (n.startswith("bar_") and known(n[4:]))  # noqa: E731
    while i < len(tokens):
        j = next((j for j in range(len(tokens), i, -1) if known("_".join(tokens[i:j]))), i + 1)
        out.append("_".join(tokens[i:j]))
        i = j
    return out


def name_of(symbol: sp.Symbol, index: str, target: int) -> str:
    """``rank:printed`` for ``symbol``; per-element symbols get the subscript ``index``.

    A plain symbol named ``base_i`` or ``base_j`` is a column copy of the per-element
    ``base`` (see :func:`derive.proofs.column_copies`) and is printed as base_i.
    """
    base, _, sub = symbol.name.rpartition("_")
    copy = not isinstance(symbol, Elem) and base and sub in COPY_INDICES
    if copy:
        index = sub
    else:
        base = symbol.name
    entry = entry_of(base)
    printed = entry[target]
    if isinstance(symbol, Elem) or copy:
        printed = f"{printed}_{{{index}}}" if target == TEX else f"{printed}_{index}"
    return f"{entry[0]}:{printed}"


def shown(expr: sp.Expr, index: str, target: int, param_index: str | None = None) -> sp.Expr:
    """``expr`` in display form for ``target`` (TEX or TEXT); see the module docstring.

    ``ParamSum`` (how dgamma is collected) becomes a sum over k = 1..m when
    ``param_index`` is None (the parameter is shared by exactly one group, as in
    batch norm), else it stays a ParamSum over that index.
    """
    k = Shown("0:k", integer=True)

    def rename(e: sp.Expr, idx: str) -> sp.Expr:
        symbols = sorted((s for s in e.free_symbols if not isinstance(s, Shown)), key=lambda s: s.name)
        return e.xreplace({s: Shown(name_of(s, idx, target), **s.assumptions0) for s in symbols})

    m = Shown("0:m", positive=True, integer=True)
    sums = {s: sp.Sum(rename(s.args[0], "k"), (k, 1, m))
            for s in sorted(expr.atoms(BatchSum), key=sp.default_sort_key)}
    for p in sorted(expr.atoms(ParamSum), key=sp.default_sort_key):
        sums[p] = (sp.Sum(rename(p.args[0], "k"), (k, 1, m)) if param_index is None
                   else ParamSum(rename(p.args[0], param_index)))
    return rename(expr.xreplace(sums).xreplace({M: m}), index)


class Partial(sp.Expr):
    """The partial derivative of ``args[0]`` with respect to ``args[1]``: a display object, never evaluated."""

    def __new__(cls, of: sp.Expr, wrt: sp.Expr):
        return sp.Expr.__new__(cls, of, wrt)


def power(tex: str, exp: str | None) -> str:
    """``tex`` raised to ``exp`` (SymPy's LaTeX printer passes the exponent of a function call)."""
    return tex if exp is None else rf"{tex}^{{{exp}}}"


class NotationPrinter(LatexPrinter):
    """SymPy's LaTeX printer on display-form expressions (see :func:`shown`)."""

    def __init__(self, index: str = "i", param_index: str | None = None):
        super().__init__({"mul_symbol": None})
        self.index, self.param_index = index, param_index

    def doprint(self, expr) -> str:
        """Print ``expr`` after rewriting it into display form."""
        return super().doprint(shown(sp.sympify(expr), self.index, TEX, self.param_index))

    def _print_Shown(self, expr: Shown) -> str:
        """A display symbol carries its LaTeX."""
        return expr.printed

    def _as_ordered_terms(self, expr, order=None):
        """Lead a sum with a positive term: x_k - mu, not -mu + x_k."""
        terms = super()._as_ordered_terms(expr, order=order)
        return sorted(terms, key=lambda t: t.could_extract_minus_sign())

    def _print_ParamSum(self, expr: ParamSum) -> str:
        """A sum over every position n that shares the parameter (bounds are given in the text)."""
        body = self._print(expr.args[0])
        if expr.args[0].is_Add:
            body = rf"\left({body}\right)"
        return rf"\sum_{{{self.param_index}}} {body}"

    def _print_StopGrad(self, expr, exp=None) -> str:
        """stop_gradient(a): printed sg(a); the documents say what it means."""
        return power(rf"\operatorname{{sg}}\left({self._print(expr.args[0])}\right)", exp)

    def _print_ClampMin(self, expr, exp=None) -> str:
        """clamp_min(a, lo) is max(a, lo) in value; its rule at the kink shows as an Iverson bracket."""
        return power(rf"\max\left({self._print(expr.args[0])}, {self._print(expr.args[1])}\right)", exp)

    def _print_ClampMax(self, expr, exp=None) -> str:
        """clamp_max(a, hi) is min(a, hi) in value."""
        return power(rf"\min\left({self._print(expr.args[0])}, {self._print(expr.args[1])}\right)", exp)

    def _print_Heaviside(self, expr, exp=None) -> str:
        """Heaviside(a, 1) is the Iverson bracket [a >= 0], Heaviside(a, 0) is [a > 0]: exact at the kink."""
        rel = r"\geq" if len(expr.args) > 1 and expr.args[1] == 1 else ">"
        return power(rf"\left[{self._print(expr.args[0])} {rel} 0\right]", exp)

    _print_Step = _print_Heaviside  # derive.algebra.Step: the same step

    def _print_Partial(self, expr: Partial) -> str:
        """A Jacobian entry, as a fraction of partials."""
        return rf"\frac{{\partial {self._print(expr.args[0])}}}{{\partial {self._print(expr.args[1])}}}"


class TextPrinter(StrPrinter):
    """Plain-text notation for the terminal (``derive explain``): x̂_i, σ_ε, Σ_k(...)."""

    def __init__(self, index: str = "i", param_index: str | None = None):
        super().__init__()
        self.index, self.param_index = index, param_index

    def doprint(self, expr) -> str:
        """Print ``expr`` after rewriting it into display form."""
        return super().doprint(shown(sp.sympify(expr), self.index, TEXT, self.param_index))

    def _print_Shown(self, expr: Shown) -> str:
        """A display symbol carries its text."""
        return expr.printed

    def _print_Sum(self, expr: sp.Sum) -> str:
        """Σ_k(summand): the bounds are always 1..m, so only the index is printed."""
        return f"\u03a3_{self._print(expr.limits[0][0])}({self._print(expr.function)})"

    def _print_ParamSum(self, expr: ParamSum) -> str:
        """Σ_n(summand) over the positions n that share the parameter."""
        return f"\u03a3_{self.param_index}({self._print(expr.args[0])})"

    def _print_KroneckerDelta(self, expr: sp.KroneckerDelta) -> str:
        """δ_ij, as in the documents."""
        return f"\u03b4_{self._print(expr.args[0])}{self._print(expr.args[1])}"

    def _print_StopGrad(self, expr) -> str:
        """sg(a), as in the documents."""
        return f"sg({self._print(expr.args[0])})"

    def _print_ClampMin(self, expr) -> str:
        """max(a, lo), as in the documents."""
        return f"max({self._print(expr.args[0])}, {self._print(expr.args[1])})"

    def _print_ClampMax(self, expr) -> str:
        """min(a, hi), as in the documents."""
        return f"min({self._print(expr.args[0])}, {self._print(expr.args[1])})"

    def _print_Heaviside(self, expr) -> str:
        """[a >= 0] or [a > 0], as in the documents."""
        rel = ">=" if len(expr.args) > 1 and expr.args[1] == 1 else ">"
        return f"[{self._print(expr.args[0])} {rel} 0]"

    _print_Step = _print_Heaviside  # derive.algebra.Step: the same step

    def _print_Partial(self, expr: Partial) -> str:
        """\u2202y_j/\u2202x_i."""
        return f"\u2202{self._print(expr.args[0])}/\u2202{self._print(expr.args[1])}"

    def _print_Equality(self, expr: sp.Eq) -> str:
        """lhs = rhs, as written in the documents."""
        return f"{self._print(expr.lhs)} = {self._print(expr.rhs)}"

    def _as_ordered_terms(self, expr, order=None):
        """Lead a sum with a positive term, as the LaTeX printer does."""
        terms = super()._as_ordered_terms(expr, order=order)
        return sorted(terms, key=lambda t: t.could_extract_minus_sign())


@dataclass(frozen=True)
class Math:
    """One formula, printed for every target from one SymPy expression."""

    expr: sp.Expr
    tex: str
    text: str
    index: str = "i"                 #: the subscript of per-element symbols outside sums
    param_index: str | None = None   #: the index of a ParamSum, None when it is a sum over k


def math(expr, index: str = "i", param_index: str | None = None) -> Math:
    expr = sp.sympify(expr)
    return Math(expr, NotationPrinter(index, param_index).doprint(expr),
                TextPrinter(index, param_index).doprint(expr), index, param_index)
