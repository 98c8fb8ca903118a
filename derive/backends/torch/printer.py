"""The torch printer: the tensor printer (derive.backends.tensors), and the same assignments as
torch operations that write into their result, for a backward that autograd does not record."""
from __future__ import annotations

import sympy as sp

from ...math.algebra import BatchSum, Const, Elem, ParamSum
from ..tensors import TensorPrinter as TorchPrinter


def torch_code(expr: sp.Expr, leaves: bool = False) -> str:
    """``expr`` as torch operations (``leaves``: the parameter sums may be over no axis, see
    :attr:`TorchPrinter.param_total`)."""
    printer = TorchPrinter()
    printer.param_total = leaves
    return printer.doprint(expr)


SCRATCH = "_t"


class FusedEmitter:
    """The same assignments as chains of torch operations that write into their result
    (``out=``, ``addcmul_``), for a backward that autograd does not record.

        dx = dout*coef_dout + xhat*coef_xhat + coef_1
    becomes
        dx = torch.addcmul(coef_1, dout, coef_dout)
        dx.addcmul_(xhat, coef_xhat)

    and a group sum of a product, ``(dout*xhat).sum(...)``, multiplies into one scratch
    tensor ``_t`` reused by every such sum.  A per-element term is its per-element factors
    (the full-size ones first, then the parameters) times one per-group factor; which
    torch call runs is read off the SymPy expression tree, nothing is typed by hand.  What
    does not have that shape is printed as :class:`TorchPrinter` prints it.
    """

    def __init__(self, params=()):
        self.params = frozenset(params)   #: per-element symbols that are not full size (gamma)
        self.printer = TorchPrinter()
        self.lines: list[str] = []
        self.has_scratch = False
        self.numbers = {"m"}   #: names that are Python numbers in the kernel, not tensors

    def number(self, e: sp.Expr) -> bool:
        """True when ``e`` is a Python number in the kernel (the group size, the layer's
        constants): it goes to a ``value=``/``alpha=`` keyword, not into a tensor slot."""
        return all(isinstance(s, Const) or s.name in self.numbers for s in e.free_symbols)

    def code(self, e: sp.Expr) -> str:
        return self.printer.doprint(e)

    def full(self, f) -> bool:
        return isinstance(f, Elem) and f.name not in self.params

    def split(self, term: sp.Expr):
        """(number, per-element factors, per-group factor) of a product, or None when a factor
        is some other function of per-element values."""
        k, elems, group = sp.S.One, [], []
        for f in sp.Mul.make_args(term):
            if self.number(f):
                k *= f
            elif isinstance(f, Elem):
                elems.append(f)
            elif f.atoms(Elem):
                return None
            else:
                group.append(f)
        elems.sort(key=lambda f: (not self.full(f), f.name))
        return k, elems, sp.Mul(*group)

    def operands(self, elems, group) -> list[str]:
        return [self.code(f) for f in elems] + ([self.code(group)] if group != 1 else [])

    def product(self, ops: list[str], target: str, fresh: bool) -> None:
        """target = the product of two or more operands, the first one full size."""
        a, b, *rest = ops
        if fresh:
            self.lines.append(f"{target} = torch.mul({a}, {b})")
        else:
            self.lines.append(f"torch.mul({a}, {b}, out={target})")
        self.lines += [f"{target}.mul_({c})" for c in rest]

    def into_scratch(self, ops: list[str]) -> str:
        self.product(ops, SCRATCH, not self.has_scratch)
        self.has_scratch = True
        return SCRATCH

    @staticmethod
    def scaled(k, keyword: str) -> str:
        return "" if k == 1 else f", {keyword}={TorchPrinter().doprint(k)}"

    def reduction(self, lhs: str, e, axes: str) -> bool:
        parts = self.split(e.args[0])
        if parts is None or parts[0] != 1 or not parts[1] or not self.full(parts[1][0]):
            return False
        ops = self.operands(parts[1], parts[2])
        source = ops[0] if len(ops) == 1 else self.into_scratch(ops)
        if self.printer.param_total and axes == "param_sum_axes":   # no axis: a copy, never the scratch itself
            self.lines.append(f"{lhs} = _rt.param_total({source}, {axes})")
        else:
            self.lines.append(f"{lhs} = {source}.sum(dim={axes}, keepdim=True)")
        return True

    def chain(self, lhs: str, e: sp.Expr) -> bool:
        """A sum of per-element terms and a per-group rest, accumulated into a fresh tensor."""
        per_element = [t for t in sp.Add.make_args(e) if t.atoms(Elem)]
        rest = sp.Add(*[t for t in sp.Add.make_args(e) if not t.atoms(Elem)])
        terms = [(t, self.split(t)) for t in per_element]
        if any(p is None for _, p in terms):
            return False
        # first a full-size term: one that takes the per-group rest in the same call
        # (addcmul, add) if there is a rest, else the one with the most factors (built in place)
        def order(tp):
            t, (k, elems, group) = tp
            n = len(self.operands(elems, group))
            return (not (elems and self.full(elems[0])), rest == 0 or self.number(rest) or n > 2, -n,
                    sp.default_sort_key(t))
        terms.sort(key=order)
        (_, (k, elems, group)), later = terms[0], terms[1:]
        if not elems or not self.full(elems[0]):
            return False
        ops = self.operands(elems, group)
        pending = rest
        if self.number(rest):  # addcmul and add take a tensor there
            ops_rest = False
        else:
            ops_rest = rest != 0
        if len(ops) == 2 and ops_rest:
            self.lines.append(f"{lhs} = torch.addcmul({self.code(rest)}, {ops[0]}, {ops[1]}{self.scaled(k, 'value')})")
            pending = 0
        elif len(ops) == 1 and ops_rest:
            self.lines.append(f"{lhs} = torch.add({self.code(rest)}, {ops[0]}{self.scaled(k, 'alpha')})")
            pending = 0
        elif len(ops) == 1:
            self.lines.append(f"{lhs} = torch.mul({ops[0]}, {self.code(k)})" if k != 1 else
                              f"{lhs} = torch.clone({ops[0]})")
        else:
            self.product(ops, lhs, fresh=True)
            if k != 1:
                self.lines.append(f"{lhs}.mul_({self.code(k)})")
        for t, (k, elems, group) in later:
            ops = self.operands(elems, group)
            if not elems or not self.full(elems[0]):
                self.lines.append(f"{lhs}.add_({self.code(t)})")
            elif len(ops) == 1:
                self.lines.append(f"{lhs}.add_({ops[0]}{self.scaled(k, 'alpha')})")
            elif len(ops) == 2:
                self.lines.append(f"{lhs}.addcmul_({ops[0]}, {ops[1]}{self.scaled(k, 'value')})")
            else:
                self.into_scratch(ops[:-1])
                self.lines.append(f"{lhs}.addcmul_({SCRATCH}, {ops[-1]}{self.scaled(k, 'value')})")
        if pending != 0:
            self.lines.append(f"{lhs}.add_({self.code(pending)})")
        return True

    def assign(self, lhs: sp.Symbol, e: sp.Expr) -> None:
        name = lhs.name
        if self.number(e):
            self.numbers.add(name)
        if isinstance(e, (BatchSum, ParamSum)):
            done = self.reduction(name, e, "axes" if isinstance(e, BatchSum) else "param_sum_axes")
        elif e.atoms(Elem) and not e.atoms(BatchSum, ParamSum):
            done = self.chain(name, e)
        else:
            done = False
        if not done:
            self.lines.append(f"{name} = {self.code(e)}")


def torch_fused_lines(assignments, params=(), leaves: bool = False) -> list[str]:
    """Statements computing ``assignments`` in order, each result written into place (for
    a function that autograd does not record; see :class:`FusedEmitter`)."""
    em = FusedEmitter(params)
    em.printer.param_total = leaves
    for lhs, e in assignments:
        em.assign(lhs, e)
    return em.lines
