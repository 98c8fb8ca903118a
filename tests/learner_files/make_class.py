"""Write a class of generated submissions for `derive grade`: right ones in four styles, known slips
made by editing them, and hostile files.

    python3 tests/learner_files/make_class.py OUT_FOLDER [N]      (N = 100 by default)

Each submission is one file, named <number>_<what it is>.py; the hostile ones import the right
functions from full_reshape.py, which is written beside them (as one of the class's submissions).
"""
from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).parent
STYLES = ("staged_tuple.py", "compact_dict.py", "textbook_dict.py", "full_reshape.py")
TERMS = "(N * dout - dbeta - xhat * dgamma)"

#: (what, the file edited, the edits)
VARIANTS = [
    ("no-mu-path", "staged_tuple.py", [("dx = dx1 + dx2", "dx = dx1")]),
    ("no-var-path", "staged_tuple.py", [("dx1 = dxmu1 + dxmu2", "dx1 = dxmu1")]),
    ("naive", "staged_tuple.py", [("dx = dx1 + dx2", "dx = dxmu1")]),
    ("dgamma-not-summed", "staged_tuple.py", [("dgamma = np.sum(dout * xhat, axis=0)", "dgamma = dout * xhat")]),
    ("var-m-1", "compact_dict.py", [("x.var(axis=0)", "x.var(axis=0, ddof=1)")]),
    ("eps-outside", "staged_tuple.py", [("np.sqrt(var + eps)\n", "np.sqrt(var) + eps\n")]),
    ("wrong-axis", "staged_tuple.py", [("mu = 1. / N * np.sum(x, axis=0)", "mu = np.mean(x, axis=1, keepdims=True)"),
                                       ("var = 1. / N * np.sum(sq, axis=0)", "var = np.mean(sq, axis=1, keepdims=True)")]),
    ("sign-2", "compact_dict.py", [(TERMS, "(N * dout - dbeta + xhat * dgamma)")]),
    ("momentum-swapped", "textbook_dict.py", [("running_mean = momentum * running_mean + (1 - momentum) * mu",
                                               "running_mean = (1 - momentum) * running_mean + momentum * mu"),
                                              ("running_var = momentum * running_var + (1 - momentum) * var",
                                               "running_var = (1 - momentum) * running_var + momentum * var")]),
    ("no-gamma-in-dxhat", "staged_tuple.py", [("dxhat = dout * gamma", "dxhat = dout")]),
    ("whole-array", "compact_dict.py", [("x.mean(axis=1, keepdims=True), x.var(axis=1, keepdims=True)",
                                         "x.mean(), x.var()")]),
    ("eps-1e-8", "compact_dict.py", [('eps = bn_param.get("eps", 1e-5)', "eps = 1e-8")]),
    ("unknown", "compact_dict.py", [("dbeta = dout.sum(axis=0)", "dbeta = 2 * dout.sum(axis=0)")]),
]
HOSTILE = sorted(p.name for p in (HERE / "hostile").glob("*.py") if p.name != "right_answers.py")


def make_class(folder: Path, n: int = 100) -> list[Path]:
    """Write ``n`` submissions (at least the right ones, one of each kind after) into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in ("compact_dict.py", "full_reshape.py"):  # imported by unrelated.py and the hostile files
        (folder / name).write_text((HERE / name).read_text())
    kinds = [(f"right_{s[:-3]}", (HERE / s).read_text()) for s in STYLES]
    for what, name, edits in VARIANTS:
        text = (HERE / name).read_text()
        for old, new in edits:
            assert old in text, f"the edit for {what} does not apply to {name}"
            text = text.replace(old, new)
        kinds.append((what, text))
    kinds.append(("unrelated", (HERE / "unrelated.py").read_text()))
    for name in HOSTILE:
        text = (HERE / "hostile" / name).read_text().replace("from right_answers import", "from full_reshape import")
        kinds.append((f"hostile_{name[:-3]}", text))
    written = [folder / "compact_dict.py", folder / "full_reshape.py"]
    for i in range(n - len(written)):
        what, text = kinds[i % len(kinds)]
        path = folder / f"{i:03d}_{what}.py"
        path.write_text(text)
        written.append(path)
    return written


if __name__ == "__main__":
    paths = make_class(Path(sys.argv[1]), int(sys.argv[2]) if len(sys.argv) > 2 else 100)
    print(f"wrote {len(paths)} submissions into {sys.argv[1]}")
