"""The derivation documents: every printed formula is the proved one, and the LaTeX compiles.

The oracle for the printed math is a small LaTeX reader written here, independent
of derive/latex.py: it knows our notation from its own table (``TEX_NAMES``),
reads sums, fractions, roots, powers and implicit products, and returns a SymPy
expression.  Every displayed equation of every document, and every inline
formula, is read back and compared exactly with the expression it was printed
from; that expression is in turn checked to be the Derivation's proved one.
A printer bug (a lost sign or bracket, a wrong name or index) fails here.
"""
from __future__ import annotations

import os
import re
import shutil
import struct
import subprocess
from pathlib import Path

import pytest
import sympy as sp
from _derived import all_default, answers, rendered_files

from derive import cli
from derive.docs import breaking, documents, pdf
from derive.docs.blocks import Equation, Para, Table
from derive.docs.latex import Math, Partial, math
from derive.forward.graph import ClampMax, ClampMin, StopGrad
from derive.forward.library import BY_NAME
from derive.learners import explain
from derive.math.algebra import BatchSum, Elem, M, ParamSum
from derive.output import render
from derive.proofs import first as proofs

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "generated" / "derivations"
S, P, D = sp.Function("S"), sp.Function("P"), sp.Function("D")
Q = sp.Function("Q")   # a sum over the ranks r = 1..R (across processes)
FUNCTIONS = {r"\max": ClampMin, r"\min": ClampMax, r"\operatorname{sg}": StopGrad}


# ----------------------------------------------------------------------------- the oracle

TEX_NAMES = {
    r"dx^{\mathrm{naive}}": "dxnaive", r"db^{\mathrm{naive}}": "dbnaive",
    r"dx^{\mathrm{seed}}": "dxseed", r"d\mu^{\mathrm{seed}}": "dmuseed",
    r"dx^{\mathrm{inside}}": "dxinside", r"dx^{\mathrm{outside}}": "dxoutside",
    r"d\hat{x}": "dxhat", r"\hat{x}": "xhat", r"d\sigma^{2}": "dvar", r"\sigma^{2}": "var",
    r"\sigma_{\varepsilon}": "std", r"d\mu": "dmu", r"\mu": "mu", r"\varepsilon": "eps",
    r"d\gamma": "dgamma", r"\gamma": "gamma", r"d\beta": "dbeta", r"\beta": "beta",
    "dy": "dout", "dx": "dx", "db": "db", "x": "x", "y": "out", "u": "u", "t": "t", "b": "b",
    "m": "m", "N": "N", "L": "L", "r": "r", "i": "i", "j": "j", "k": "k", "n": "n",
}
TOKEN = re.compile("|".join([
    r"(?P<space>\s+|\\,)", r"(?P<over>\\overline\{)", r"(?P<sigma>\\Sigma_\{)", r"(?P<lp>\\left\(|\\biggl\(|\\Bigl\(|\()", r"(?P<rp>\\right\)|\\biggr\)|\\Bigr\)|\))", r"(?P<frac>\\frac)",
    r"(?P<sqrt>\\sqrt)", r"(?P<sum>\\sum_\{k=1\}\^\{m\})", r"(?P<rsum>\\sum_\{r=1\}\^\{R\})", r"(?P<psum>\\sum_\{n\})",
    r"(?P<partial>\\partial)", r"(?P<rm>\\mathrm\{(?P<rmname>[^}]*)\})",
    r"(?P<func>\\max|\\min|\\operatorname\{sg\})", r"(?P<lb>\\left\[)", r"(?P<rb>\\right\])",
    r"(?P<rel>\\geq|>)", r"(?P<comma>,)", r"(?P<delta>\\delta_\{(?P<d1>\w) (?P<d2>\w)\})", r"(?P<cdot>\\cdot)",
    "(?P<name>" + "|".join(re.escape(k) for k in sorted(TEX_NAMES, key=len, reverse=True)) + ")",
    r"(?P<letter>[A-Za-z])", r"(?P<num>\d+(?:\.\d+)?)", r"(?P<op>[-+=^_{}])"]))


def tokens(tex: str) -> list[tuple[str, str]]:
    out, pos = [], 0
    while pos < len(tex):
        match = TOKEN.match(tex, pos)
        assert match, f"cannot read {tex[pos:pos + 30]!r} in {tex!r}"
        kind = {"d1": "delta", "d2": "delta", "rmname": "rm", "letter": "name"}.get(match.lastgroup, match.lastgroup)
        if kind == "rm":
            out.append(("name", match.group("rmname").replace("\\_", "_")))
        elif kind != "space":
            out.append((kind, match.group(0) if kind != "delta" else match.group("d1") + match.group("d2")))
        pos = match.end()
    return out


class Reader:
    """Recursive descent over the token list; sums take a product as their summand."""

    def __init__(self, tex: str):
        self.toks, self.pos = tokens(tex), 0

    def peek(self):
        return self.toks[self.pos] if self.pos < len(self.toks) else ("end", "")

    def take(self, value=None):
        tok = self.peek()
        assert value is None or tok[1] == value, f"expected {value!r}, got {tok}"
        self.pos += 1
        return tok

    def relation(self):
        lhs = self.expr()
        if self.peek()[1] == "=":
            self.take("=")
            return sp.Eq(lhs, self.expr(), evaluate=False)
        assert self.peek()[0] == "end", self.peek()
        return lhs

    def expr(self):
        sign = -1 if self.peek()[1] == "-" else 1
        if self.peek()[1] in "+-" and self.peek()[0] == "op":
            self.take()
        total = sign * self.term()
        while self.peek()[1] in ("+", "-"):
            sign = -1 if self.take()[1] == "-" else 1
            total += sign * self.term()
        return total

    def term(self):
        factors = [self.factor()]
        while self.peek()[0] not in ("end", "rp", "rb", "rel", "comma") and self.peek()[1] not in ("+", "-", "=", "}"):
            if self.peek()[0] == "cdot":
                self.take()
            factors.append(self.factor())
        return sp.Mul(*factors)

    def factor(self):
        base = self.primary()
        if self.peek()[1] == "^":
            self.take("^")
            base = base ** self.group()
        return base

    def group(self):
        if self.peek()[1] == "{":
            self.take("{")
            inner = self.expr()
            self.take("}")
            return inner
        return self.primary()

    def primary(self):
        kind, text = self.take()
        if kind == "num":
            return sp.Rational(text)
        if kind in ("name", "over", "sigma"):
            if kind == "over":      # the adjoint of the second order: bar_<name>
                name = "bar_" + self.primary().name
                self.take("}")
            elif kind == "sigma":   # a named group sum: sum_<factor>_<factor>
                factors = []
                while self.peek()[1] != "}":
                    factors.append(self.primary().name)
                self.take("}")
                name = "sum_" + "_".join(factors)
            else:
                name = TEX_NAMES.get(text, text)
            if self.peek()[1] == "_":
                self.take("_")
                self.take("{")
                index = self.take()[1]
                name += "_" + TEX_NAMES.get(index, index)
                self.take("}")
            return sp.Symbol(name)
        if kind == "func":
            self.take()
            args = [self.expr()]
            while self.peek()[0] == "comma":
                self.take()
                args.append(self.expr())
            assert self.take()[0] == "rp"
            return sp.Function(FUNCTIONS[text].__name__)(*args)
        if kind == "lb":
            inner = self.expr()
            rel = self.take()[1]
            self.take("0")
            assert self.take()[0] == "rb"
            return sp.Function("Heaviside")(inner, 1 if rel == r"\geq" else 0)
        if kind == "frac":
            if self.toks[self.pos + 1][0] == "partial":
                self.take("{"), self.take()
                of = self.primary()
                self.take("}"), self.take("{"), self.take()
                wrt = self.primary()
                self.take("}")
                return D(of, wrt)
            top = self.group()
            return top / self.group()
        if kind == "sqrt":
            return sp.sqrt(self.group())
        if kind == "lp":
            inner = self.expr()
            assert self.take()[0] == "rp"
            return inner
        if kind == "op" and text == "{":
            inner = self.expr()
            self.take("}")
            return inner
        if kind == "delta":
            return sp.KroneckerDelta(sp.Symbol(text[0]), sp.Symbol(text[1]))
        if kind == "sum":
            return S(self.term())
        if kind == "psum":
            return P(self.term())
        if kind == "rsum":
            return Q(self.term())
        raise AssertionError(f"unexpected {kind} {text!r}")


def read(tex: str):
    return Reader(tex).relation()


def expected(e, index: str = "i", param_index: str | None = None):
    """What the reader must return for the derivation expression ``e``."""
    if isinstance(e, BatchSum):
        return S(expected(e.args[0], "k"))
    if isinstance(e, sp.Sum):
        return Q(expected(e.args[0], index, param_index))
    if isinstance(e, ParamSum):
        return S(expected(e.args[0], "k")) if param_index is None else P(expected(e.args[0], param_index))
    if isinstance(e, Partial):
        return D(*[expected(a, index, param_index) for a in e.args])
    if isinstance(e, Elem):
        return sp.Symbol(f"{e.name}_{index}")
    if isinstance(e, sp.Symbol):
        return sp.Symbol(e.name)
    if isinstance(e, sp.Float):
        return sp.Rational(str(e))
    if isinstance(e, sp.Equality):
        return sp.Eq(expected(e.lhs, index, param_index), expected(e.rhs, index, param_index),
                     evaluate=False)
    if not e.args:
        return e
    args = [expected(a, index, param_index) for a in e.args]
    if isinstance(e, sp.Heaviside):  # Heaviside and derive.math.algebra.Step print alike: [a >= 0]
        return sp.Function("Heaviside")(*args)
    if isinstance(e, (StopGrad, ClampMin, ClampMax)):
        return sp.Function(type(e).__name__)(*args)
    return e.func(*args)


def same(a, b) -> bool:
    if isinstance(a, sp.Equality) or isinstance(b, sp.Equality):
        return (isinstance(a, sp.Equality) and isinstance(b, sp.Equality)
                and same(a.lhs, b.lhs) and same(a.rhs, b.rhs))
    return a == b or sp.cancel(sp.together(a - b)) == 0


def check_math(tex: str, m: Math, lets=None) -> None:
    """``tex`` reads back as ``m``'s expression; with ``lets`` (the model's abbreviations), also when
    it prints an abbreviation by its name: then the two agree once every name is replaced by its
    definition."""
    got, want = read(tex), expected(m.expr, m.index, m.param_index)
    if not same(got, want) and lets:
        defined = {sp.Symbol(let.symbol.name): expected(let.definition) for let in lets}
        got, want = got.xreplace(defined), want.xreplace(defined)
    assert same(got, want), f"printed {tex!r}\n read back as {got}\n but it was printed from {want}"


# ----------------------------------------------------------------------------- the documents

def _render(env, template, context, suffix):
    return render.render(env, template, suffix, **context)


@pytest.fixture(scope="module")
def rendered():
    """Every variant: its Derivation, its sections, and its .tex and .md text, rendered fresh."""
    env, out = render.environment(), {}
    for d in all_default():
        shown = [answers()[topic] for topic in documents.QUESTIONS.get(d.spec.name, ())]
        built = documents.sections(d, shown)
        docs = {fmt: _render(env, *documents.job(d, shown, fmt, built), fmt) for fmt in documents.TEMPLATES}
        out[d.spec.name] = (d, built, docs)
    return out


def all_blocks(sections):
    for s in sections:
        yield from s["blocks"]
        yield from all_blocks(s.get("subsections", []))


def displayed(text: str, fmt: str) -> list[tuple[int | None, str]]:
    """(tag, math) of every displayed equation, in order, with the line layout removed."""
    pattern = r"\\begin\{equation\}\n(.*?)\n\\end\{equation\}" if fmt == ".tex" else r"\$\$\n(.*?)\n\$\$"
    out = []
    for body in re.findall(pattern, text, flags=re.DOTALL):
        tag = re.search(r"\\tag\{(\d+)\}", body)
        body = re.sub(r"\\tag\{\d+\}|\\(begin|end)\{aligned\}|&\\quad|\\\\", " ", body).replace("&=", "=")
        out.append((int(tag.group(1)) if tag else None, body.strip()))
    return out


def test_every_displayed_equation_reads_back_as_its_expression(rendered):
    for name, (d, sections, docs) in rendered.items():
        equations = [b for b in all_blocks(sections) if isinstance(b, Equation)]
        for fmt, text in docs.items():
            shown = displayed(text, fmt)
            assert len(shown) == len(equations), (name, fmt)
            for n, ((tag, tex), eq) in enumerate(zip(shown, equations), 1):
                assert fmt == ".tex" or tag == n, (name, fmt, tag, n)
                lhs, _, rhs = tex.partition(" = ")
                check_math(lhs, eq.lhs)
                check_math(rhs, eq.rhs, [let for let in d.model.lets if let.symbol != eq.lhs.expr])


def test_every_inline_formula_reads_back_and_is_in_the_file(rendered):
    for name, (d, sections, docs) in rendered.items():
        for block in all_blocks(sections):
            cells = block.parts if isinstance(block, Para) else \
                [c for row in (block.header, *block.rows) for c in row] \
                if isinstance(block, Table) else ()
            for part in cells:
                if isinstance(part, Math):
                    check_math(part.tex, part)
                    for text in docs.values():
                        assert f"${part.tex}$" in text, (name, part.tex)


def equations_of(sections) -> dict:
    out: dict = {}
    for b in all_blocks(sections):
        if isinstance(b, Equation):
            out.setdefault(b.lhs.expr, []).append(b.rhs.expr)
    return out


def test_the_documents_print_the_proved_expressions(rendered):
    """The formulas come from the Derivation fields that were proved, not from anywhere else."""
    for name, (d, sections, _) in rendered.items():
        eqs = equations_of(sections[:-1] if sections[-1]["subsections"] else sections)
        for node in d.model.nodes:
            assert node.definition in eqs[node.symbol], (name, node.symbol)
        for st in d.stages:
            assert st.expr in eqs[st.symbol], (name, st.symbol)
        dx = eqs[Elem("dx", real=True)]
        assert [step for _, step in d.compact.steps] == dx[-3:], name
        assert d.compact.dx == dx[-1]
        x_i = proofs.column_copies(d.model)[d.model.x]
        (jac,) = eqs[Partial(d.model.output.symbol, x_i)]
        assert sp.cancel(jac - d.jacobian) == 0, name
        assert eqs[BatchSum(Elem("dx", real=True))] == [d.symbolic.sum_dx], name
        z = d.lemmas.variable
        if z is not None:
            assert eqs[BatchSum(Elem("dx", real=True) * z)] == [d.symbolic.sum_dx_xhat], name
        for let in d.model.lets:
            assert let.definition in eqs[let.symbol], (name, let.symbol)
        for lhs, rhs in d.lemmas.sums.items():
            assert rhs in eqs[BatchSum(lhs)], (name, lhs)
        for p in d.params:
            lhs = Elem(p.symbol.name, real=True) if d.spec.gamma_varies else p.symbol
            assert eqs[lhs][0] == p.expr, (name, p.symbol)
        so = d.second  # the section "Second order": the reverse-mode stages and the compact results
        for st in so.stages:
            assert st.expr in eqs[st.symbol], (name, st.symbol)
        for r in so.results:
            assert eqs[r.symbol][-1] == so.compact[r.symbol], (name, r.symbol)


def test_batch_norm_reads_as_the_textbook(rendered):
    d, sections, docs = rendered["batchnorm"]
    tex = docs[".tex"]
    # the Jacobian entry in the form (gamma/sigma_eps)(delta_ij - 1/m - xhat_i xhat_j/m)
    copies = proofs.column_copies(d.model)
    jac = equations_of(sections)[Partial(d.model.output.symbol, copies[d.model.x])][0]
    gamma, std, xhat = d.model.gamma, d.model.sym("std"), d.model.sym("xhat")
    delta, xi = sp.KroneckerDelta(proofs.I, proofs.J), copies[xhat]
    assert sp.expand(jac - gamma / std * (delta - 1 / M - xi * xhat / M)) == 0
    assert "three paths" in tex
    for claim in {p.claim for p in d.proofs}:
        assert documents.escape(claim, documents.TEX_ESCAPES) in tex
    assert not re.search(r"\d+\.\d+ ?s\b|seconds", tex), "timings are not deterministic"
    titles = [s["title"] for s in sections]
    assert titles.index("The forward pass") < titles.index("The computation graph") \
        < titles.index("The staged chain rule") < titles.index("The Jacobian entry") \
        < titles.index("From the stages to the compact form") < titles.index("The parameter gradients") \
        < titles.index("Second order") < titles.index("What was proved, and how") < titles.index("Invariants")
    topics = [sub["title"] for sub in sections[-1]["subsections"]]
    assert [t.rsplit("topic ", 1)[1].rstrip(")") for t in topics] == list(explain.TOPICS)


def test_the_reader_catches_a_wrong_formula():
    """The oracle itself: a sign, a bracket or an index that differs is not accepted."""
    model = BY_NAME["batchnorm"].model()
    m = math(model.dy * (model.x - model.sym("mu")))
    check_math(m.tex, m)
    for wrong in (r"dy_{i} x_{i} - \mu", r"dy_{i} \left(x_{i} + \mu\right)", r"dy_{k} \left(x_{i} - \mu\right)"):
        with pytest.raises(AssertionError):
            check_math(wrong, m)


def test_rendering_is_deterministic(rendered):
    """Two renders of the same derivations in one session (this module's, and the session's render
    of every file, shared with test_drift and test_cli) give the same documents."""
    derivations = list(all_default())
    first = {f"derivations/{name}{fmt}": text for name, (_, _, docs) in rendered.items() for fmt, text in docs.items()}
    everything = rendered_files(derivations)
    assert first == {rel: text for rel, text in everything.items() if rel.startswith("derivations/")}
    assert set(first) == {f"derivations/{d.spec.name}{fmt}" for d in derivations
                          for fmt in (".tex", ".md")}
    for rel, text in first.items():
        assert text == (ROOT / "generated" / rel).read_text(encoding="utf-8"), \
            f"{rel} is stale; regenerate it with: derive"


def test_derive_latex_prints_the_committed_document(cached, capsys, monkeypatch, tmp_path):
    """Rendered the first time, kept the second (in a cache of this test's own: the user's cache
    keeps the render of an earlier run, and then nothing would be rendered here)."""
    monkeypatch.chdir(ROOT)
    monkeypatch.setenv("NORMDERIVE_CACHE", str(tmp_path))
    for rendering in (True, False):
        assert cli.main(["latex", "batchnorm"]) == 0
        captured = capsys.readouterr()
        assert captured.out == (DOCS / "batchnorm.tex").read_text(encoding="utf-8")
        assert "batchnorm:" in captured.err   # progress
        assert ("rendering the document" in captured.err) == rendering


# ----------------------------------------------------------------------------- LaTeX tools

def need(tool: str) -> None:
    """Skip without the tool, except in CI, where a missing tool is a failure."""
    if shutil.which(tool) is None:
        if os.environ.get("CI"):
            pytest.fail(f"{tool} is required in CI (apt-get install texlive-latex-base poppler-utils)")
        pytest.skip(f"{tool} is not installed (apt-get install texlive-latex-base poppler-utils)")


#: how far a line may run past the page, in points (a line of the page is 478 pt)
OVERFULL_PT = 3.0


@pytest.mark.parametrize("tex", sorted(DOCS.glob("*.tex")), ids=lambda p: p.stem)
def test_every_document_compiles_and_fits_the_page(tex, tmp_path):
    """pdflatex compiles every committed document, and no line of it is wider than the page:
    pdflatex reports every line box that runs past the margin as an overfull box."""
    need("pdflatex")
    log = pdf.compile_tex(tex.read_text(encoding="utf-8"), tmp_path)
    assert (tmp_path / "doc.pdf").stat().st_size > 10_000
    assert "Undefined control sequence" not in log
    wide = [f"{pt:.1f} pt {where}" for pt, where in pdf.overfull(log) if pt > OVERFULL_PT]
    assert not wide, f"{tex.name} runs off the page: " + "; ".join(wide)


def test_the_overfull_reader_reads_pdflatex_logs():
    log = ("Overfull \\hbox (3056.18831pt too wide) detected at line 196\n[][][]\n"
           "Underfull \\hbox (badness 10000) in paragraph at lines 3--4\n"
           "Overfull \\hbox (32.37799pt too wide) in paragraph at lines 14--14\n")
    assert pdf.overfull(log) == [(3056.18831, "detected at line 196"), (32.37799, "in paragraph at lines 14--14")]


def test_a_wide_equation_is_cut_into_lines_that_read_back_as_it():
    """Cut to a narrow page, a quotient of products of sums of quotients is printed over many lines,
    with brackets that span lines, and the lines joined still read back as the expression."""
    model = BY_NAME["batchnorm"].model()
    x, dy, mu, std, xhat, gamma = (model.x, model.dy, model.sym("mu"), model.sym("std"), model.sym("xhat"),
                                   model.gamma)
    summand = dy * (M * dy * std + xhat * mu - (x - mu) / std ** 3 + gamma * xhat ** 2 / (M - 1)
                    - 3 * dy * xhat / std)
    expr = -gamma * BatchSum(summand) * (x - 2 * mu) / (M * std ** 2) \
        + BatchSum(x) * (xhat * std - dy / M + gamma * BatchSum(dy * xhat) / std - 2 * mu)
    eq = Equation(math(Elem("dx", real=True)), math(expr))
    lines = breaking.lines(eq, limit=24)
    assert len(lines) >= 5
    assert any(len(re.findall(r"\\(?:bigg|Big)l\(", line)) > len(re.findall(r"\\(?:bigg|Big)r\)", line))
               for line in lines), "a bracket spans lines"
    assert all(line.startswith(("+ ", "- ")) for line in lines[1:] if not line.startswith("\\"))
    check_math(" ".join(lines), eq.rhs)
    assert breaking.lines(eq, limit=10_000) == [eq.rhs.tex], "what fits is printed as SymPy prints it"


def test_latex_by_products_and_the_venv_are_ignored():
    """A user who compiles a document in generated/derivations, or follows the README into .venv,
    leaves the checkout clean."""
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    paths = [".venv/bin/python", *(f"generated/derivations/batchnorm{ext}" for ext in (".pdf", ".aux", ".log", ".out"))]
    r = subprocess.run(["git", "check-ignore", "--no-index", *paths], cwd=ROOT, capture_output=True, text=True,
                       check=False)
    assert sorted(r.stdout.split()) == sorted(paths)


def png_size(path: Path) -> tuple[int, int]:
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    return struct.unpack(">II", head[16:24])


def test_docs_png_was_rendered_from_todays_batchnorm_document():
    """The README's picture records the SHA-256 of the LaTeX it was rendered from (checked without TeX)."""
    recorded = pdf.png_text((ROOT / pdf.PICTURE).read_bytes()).get(pdf.KEYWORD)
    today = pdf.source_hash((ROOT / pdf.PICTURE_SOURCE).read_text(encoding="utf-8"))
    assert recorded == today, f"{pdf.PICTURE} shows an older {pdf.PICTURE_SOURCE.name}; re-render it " \
                              "with: python -m derive.docs.pdf"


def test_docs_png_is_the_first_page_of_batchnorm(tmp_path):
    need("pdflatex")
    need("pdftoppm")
    fresh = tmp_path / "page.png"
    pdf.first_page_png((DOCS / "batchnorm.tex").read_text(encoding="utf-8"), fresh)
    committed = ROOT / pdf.PICTURE
    assert png_size(committed) == png_size(fresh)
    assert pdf.png_text(fresh.read_bytes()) == pdf.png_text(committed.read_bytes())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["page.png"], "pdflatex's files stay in its own folder"


def test_the_picture_is_written_only_in_a_checkout(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert pdf.main() == 2
    assert "checkout" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []
