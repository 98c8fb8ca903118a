"""One rule for every identifier a generated program assigns.

The generated code uses the document's names (``mu``, ``std``, ``xhat``, ``dgamma``,
``sum_dout_xhat``); a name is changed only where it cannot be used as it is:

* it is not a Python identifier, or is a keyword (``lambda``, ``match``);
* it is one of the kernel's own names: the arguments and locals every template writes
  (``dout``, ``cache``, ``shape``), the loop variables (``o``, ``g``, ``k``, ``i``), the
  modules a kernel imports (``numpy``, ``torch``, ``_rt``) -- each backend declares its own
  in its ``RESERVED`` and the registry collects them;
* it is the name of another symbol once Python has normalized both (NFKC: the micro sign
  U+00B5 and the Greek mu U+03BC are one identifier to Python).

Such a name gets a suffix (``g`` -> ``g_1``), chosen in sorted order so the same graph always
gets the same code.  :class:`Names` maps SymPy symbols to code symbols of the same kind (a
per-element :class:`~derive.math.algebra.Elem` stays one), so every printer prints
``symbol.name`` and never decides a name itself.
"""
from __future__ import annotations

import keyword
import unicodedata
from collections.abc import Iterable

import sympy as sp

#: names no generated program may assign, whatever its backend: the builtins the printed code calls
#: and the module-level names every generated module defines
ALWAYS = frozenset({
    "abs", "min", "max", "float", "int", "range", "len", "tuple", "dict", "list", "sum", "pow", "round",
    "print", "isinstance", "type", "object", "super", "None", "True", "False", "self", "cls",
    "m",   # the group size, an argument of every kernel
})


def normal(name: str) -> str:
    """The identifier Python sees for ``name`` (PEP 3131: NFKC)."""
    return unicodedata.normalize("NFKC", name)


def usable(name: str, reserved: frozenset[str]) -> bool:
    n = normal(name)
    return (n.isidentifier() and not keyword.iskeyword(n) and not keyword.issoftkeyword(n)
            and not n.startswith("_") and n not in reserved and n not in ALWAYS)


class Names:
    """Identifiers for the symbols of one generated module, unique under NFKC.

    ``reserved``: every name the templates of the enabled backends use themselves.
    """

    def __init__(self, reserved: Iterable[str] = ()):
        self.reserved = frozenset(reserved)
        self._code: dict[sp.Symbol, sp.Symbol] = {}
        self._taken: dict[str, sp.Symbol] = {}   #: normalized identifier -> the symbol that has it
        self._locals: dict = {}
        self._fixed: set = set()

    def _fresh(self, name: str) -> str:
        base = normal(name)
        if not base.isidentifier() or keyword.iskeyword(base):
            base = "v_" + "".join(ch if ch.isalnum() else "_" for ch in base)
        base = base.lstrip("_") or "v"
        candidate, k = base, 1
        while not usable(candidate, self.reserved) or normal(candidate) in self._taken:
            candidate, k = f"{base}_{k}", k + 1
        return candidate

    def fix(self, s: sp.Symbol, name: str) -> None:
        """Give ``s`` the kernel's own name ``name`` (dout for the upstream gradient), before any other."""
        self._code[s] = s if name == s.name else type(s)(name, **s.assumptions0)
        self._taken[normal(name)] = s
        self._fixed.add(s)

    def add(self, symbols: Iterable[sp.Symbol]) -> None:
        """Name ``symbols``: first every symbol whose own name can be used, then the rest with a suffix,
        each group in sorted order (so a rename never depends on the order the pipeline met them)."""
        todo = sorted({s for s in symbols if s not in self._code}, key=lambda s: (s.name, type(s).__name__))
        later = []
        for s in todo:
            n = normal(s.name)
            if usable(s.name, self.reserved) and n not in self._taken:
                self._assign(s, n)
            else:
                later.append(s)
        for s in later:
            self._assign(s, self._fresh(s.name))

    def _assign(self, s: sp.Symbol, name: str) -> None:
        code = s if name == s.name else type(s)(name, **s.assumptions0)
        self._code[s] = code
        self._taken[normal(name)] = s

    def local(self, base: str) -> str:
        """A fresh identifier for a backend's own local (``mu_hi``, ``std_g``): ``base`` unless some
        symbol or an earlier local has it."""
        key = ("local", base)
        if key not in self._locals:
            name = base if usable(base, self.reserved) and normal(base) not in self._taken else self._fresh(base)
            self._locals[key] = name
            self._taken[normal(name)] = sp.Symbol(name)
        return self._locals[key]

    def __getitem__(self, s: sp.Symbol) -> sp.Symbol:
        return self._code[s]

    def name(self, s: sp.Symbol) -> str:
        return self._code[s].name

    def original(self, code: sp.Symbol) -> sp.Symbol:
        """The graph's own symbol behind a code symbol (its name is the param-dict key)."""
        return next((s for s, c in self._code.items() if c == code), code)

    def renamed(self) -> dict[sp.Symbol, sp.Symbol]:
        """The symbols whose code name differs from their own."""
        return {s: c for s, c in self._code.items() if c != s}

    def apply(self, expr: sp.Expr) -> sp.Expr:
        """``expr`` in code names."""
        return expr.xreplace(self.renamed()) if self.renamed() else expr

    def check(self) -> None:
        """Every code name is usable and unique under NFKC (an internal invariant: raises AssertionError)."""
        seen: dict[str, sp.Symbol] = {}
        for s, c in self._code.items():
            n = normal(c.name)
            assert s in self._fixed or usable(c.name, self.reserved), f"{c.name!r} is not a usable identifier"
            assert n not in seen, f"{s} and {seen[n]} both print as {n!r}"
            seen[n] = s
