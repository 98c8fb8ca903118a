"""`derive check FILE.py`: run a learner's CS231n functions against the derived kernels, name the slip.

The learner's forward runs, its own cache goes to its own backward, and every
output is compared with the kernels in :mod:`generated` over several shapes,
seeds and scales (a scale of 1e-3 makes the variance smaller than ε).  A function
that fails is compared with every slip of :mod:`derive.slips`; a slip is named
only when it matches every case to a relative error below ``MATCH_TOL``.
"""
from __future__ import annotations

import contextlib
import importlib.util
import io
import itertools
import sys
import traceback
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..forward.library import BY_NAME
from ..math import evaluate
from . import slips

PASS_TOL = 1e-6       #: largest relative error of a correct function (float64)
MATCH_TOL = 1e-6      #: largest relative error, on every case, for a slip to be named
DISTINCT = 1e-4       #: a slip must differ from the correct answer by more than this somewhere


class Usage(Exception):
    """A bad command line: exit code 2, one line."""


class ImportFailed(Exception):
    """The learner's file raises on import: exit code 1, one line."""


@dataclass(frozen=True)
class Case:
    x: np.ndarray
    gamma: np.ndarray
    beta: np.ndarray
    dout: np.ndarray
    running: dict
    groups: int | None

    def args(self, family: str, mode: str) -> tuple:
        p = {"mode": mode, "eps": 1e-5, "momentum": 0.9,
             **{k: v.copy() for k, v in self.running.items()}} if family in RUNNING else {"eps": 1e-5}
        g = () if self.groups is None else (self.groups,)
        return (self.x.copy(), self.gamma.copy(), self.beta.copy(), *g, p)


RUNNING = ("batchnorm", "spatial_batchnorm")
SHAPES = {"batchnorm": [((4, 3), None), ((9, 5), None), ((16, 6), None)],
          "layernorm": [((4, 3), None), ((9, 5), None), ((6, 16), None)],
          "spatial_batchnorm": [((2, 3, 4, 5), None), ((3, 2, 3, 3), None)],
          "spatial_groupnorm": [((2, 6, 3, 2), 3), ((3, 4, 2, 3), 2)]}
FUNCTIONS = {"batchnorm": ("forward", "backward", "backward_alt"), "layernorm": ("forward", "backward"),
             "spatial_batchnorm": ("forward", "backward"), "spatial_groupnorm": ("forward", "backward")}


def cases(family: str) -> list[Case]:
    out = []
    for (shape, groups), seed, scale in itertools.product(SHAPES[family], (0, 1), (1.0, 1e-3)):
        rng = np.random.default_rng(seed)
        c = shape[1]
        pshape = (1, c, 1, 1) if family == "spatial_groupnorm" else (c,)
        x = scale * (rng.normal(size=shape) + rng.normal(size=(1, c) + (1,) * (len(shape) - 2)))
        running = {"running_mean": rng.normal(size=c), "running_var": rng.uniform(0.5, 2.0, size=c)}
        out.append(Case(x, 1 + 0.5 * rng.normal(size=pshape), rng.normal(size=pshape),
                        rng.normal(size=shape), running, groups))
    return out


# ----------------------------------------------------------------------------- outputs

def call(fns: dict, family: str, kind: str, case: Case) -> dict:
    """The outputs of one function on one case: {name: array}."""
    fwd = fns[f"{family}_forward"]
    if kind == "test":
        out, _ = fwd(*case.args(family, "test"))
        return {"out": out}
    args = case.args(family, "train")
    out, cache = fwd(*args)
    if kind == "train":
        return {"out": out, **{k: args[-1].get(k) for k in case.running if family in RUNNING}}
    dx, dgamma, dbeta = fns[f"{family}_{kind}"](case.dout.copy(), cache)
    return {"dx": dx, "dgamma": dgamma, "dbeta": dbeta}


def derived_outputs(d: slips.Derived, family: str, kind: str, case: Case) -> dict:
    """The same outputs from a (slipped) derivation; None where the slip does not define one."""
    spec = BY_NAME[family].spec
    view = evaluate.view_of(spec, case.x.shape, case.groups, d.axes)
    weights, params = {"gamma": case.gamma, "beta": case.beta}, {"eps": 1e-5, "momentum": 0.9}
    c = case.x.shape[1]
    if kind == "test":
        env = evaluate.forward(d.test, case.x, weights, params, view, case.running)
        return {"out": env["out"].reshape(case.x.shape)}
    env = evaluate.forward(d.train, case.x, weights, params, view, case.running if d.axes is None else {})
    if kind == "train":
        run = {k: (env["new_" + k].reshape(c) if d.axes is None else None)
               for k in case.running if family in RUNNING}
        return {"out": env["out"].reshape(case.x.shape), **run}
    b = evaluate.backward(d.stages, d.params, env, case.dout, view)
    dx = b["dx"] if d.dx is None else evaluate.value(d.dx, b, view)
    grads = {}
    for st in d.params:
        name = st.symbol.name
        if name[1:] in d.unsummed:
            grads[name] = np.broadcast_to(evaluate.value(st.expr.args[0], b, view), view.shape).reshape(case.x.shape)
        else:
            grads[name] = b[name].reshape(case.gamma.shape)
    return {"dx": np.broadcast_to(dx, view.shape).reshape(case.x.shape), **grads}


def rel_error(got, expected) -> float:
    got = np.asarray(got, dtype=np.float64) if got is not None else None
    if got is None or got.size != expected.size:
        return float("inf")
    scale = max(float(np.max(np.abs(expected))), 1e-12)
    return float(np.max(np.abs(got.ravel() - expected.ravel()))) / scale


def worst(got: dict, expected: dict) -> dict:
    """Where the learner's output differs most from the derived one."""
    name = max(expected, key=lambda k: rel_error(got.get(k), expected[k]))
    exp = np.asarray(expected[name], dtype=np.float64)
    g = got.get(name)
    if g is None or np.size(g) != exp.size:
        return {"output": name, "shape": list(np.shape(g)) if g is not None else None, "expected_shape": list(exp.shape)}
    g = np.asarray(g, dtype=np.float64).reshape(exp.shape)
    index = np.unravel_index(int(np.argmax(np.abs(g - exp))), exp.shape)
    return {"output": name, "index": [int(i) for i in index], "got": float(g[index]), "expected": float(exp[index])}


# ----------------------------------------------------------------------------- one function

def check_function(fns: dict, family: str, kind: str) -> dict:
    name = f"{family}_forward" if kind in ("train", "test") else f"{family}_{kind}"
    label = f"{name} ({kind} mode)" if kind in ("train", "test") and family in RUNNING else name
    result = {"function": label, "status": "pass", "max_rel_error": 0.0, "slip": None}
    got_all, ref_all = [], []
    for case in cases(family):
        try:
            with contextlib.redirect_stdout(io.StringIO()), np.errstate(all="ignore"):
                got = call(fns, family, kind, case)
        except Exception as exc:  # the learner's code: its failure is this function's result
            last = traceback.format_exception_only(type(exc), exc)[-1].strip()
            return {**result, "status": "error", "max_rel_error": None, "error": last}
        ref = call(GENERATED, family, kind, case)
        got_all.append(got)
        ref_all.append(ref)
        err = max(rel_error(got.get(k), ref[k]) for k in ref)
        result["max_rel_error"] = max(result["max_rel_error"], err)
    if result["max_rel_error"] <= PASS_TOL:
        return result
    if not np.isfinite(result["max_rel_error"]):
        result["max_rel_error"] = None
    result["status"] = "fail"
    result["slip"] = name_slip(family, kind, got_all, ref_all)
    if result["slip"] is None:
        k = max(range(len(ref_all)), key=lambda i: max(rel_error(got_all[i].get(o), r) for o, r in ref_all[i].items()))
        result["worst"] = {"case": k, **worst(got_all[k], ref_all[k])}
    return result


def name_slip(family: str, kind: str, got_all: list, ref_all: list) -> dict | None:
    for slip in slips.CATALOGUE:
        if not slips.applies(slip, family):
            continue
        d = slip.derived(family)
        if kind == "test" and d.test is None:
            continue
        matched, distinct = True, False
        for case, got, ref in zip(cases(family), got_all, ref_all):
            want = derived_outputs(d, family, kind, case)
            for k, v in want.items():
                if v is None:
                    continue
                if rel_error(got.get(k), v) >= MATCH_TOL:
                    matched = False
                    break
                distinct |= k in ref and rel_error(v, ref[k]) > DISTINCT
            if not matched:
                break
        if matched and distinct:
            return {"id": slip.id, "sentence": slip.sentence, "topic": slip.topic,
                    "formula": slips.formula(slip, family)}
    return None


# ----------------------------------------------------------------------------- a file

def load(path: Path) -> dict:
    """The learner's functions, imported as Python would run the file (its folder on sys.path)."""
    if not path.is_file():
        raise Usage(f"derive check: no such file: {path}")
    spec = importlib.util.spec_from_file_location(f"_learner_{path.stem}", path)
    if spec is None or spec.loader is None:
        raise Usage(f"derive check: not a Python file: {path}")
    module = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(path.resolve().parent))
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            spec.loader.exec_module(module)
    except Exception as exc:  # the learner's code: reported in one line, never a traceback
        raise ImportFailed(f"derive check: {path} fails to import: "
                           f"{traceback.format_exception_only(type(exc), exc)[-1].strip()}") from None
    finally:
        sys.path.remove(str(path.resolve().parent))
    wanted = {f"{f}_{k}" for f, kinds in FUNCTIONS.items() for k in kinds}
    fns = {n: getattr(module, n) for n in sorted(wanted) if callable(getattr(module, n, None))}
    if not fns:
        raise Usage(f"derive check: {path} defines none of {', '.join(sorted(wanted))}")
    return fns


def plan(fns: dict) -> list[tuple[str, str]]:
    out = []
    for family, kinds in FUNCTIONS.items():
        for kind in kinds:
            if f"{family}_{kind}" not in fns:
                continue
            out += [(family, k) for k in (("train", "test") if family in RUNNING else ("train",))] \
                if kind == "forward" else [(family, kind)]
    return out


def check_file(path: Path) -> list[dict]:
    fns = load(path)
    results = []
    for family, kind in plan(fns):
        if kind not in ("train", "test") and f"{family}_forward" not in fns:
            results.append({"function": f"{family}_{kind}", "status": "error", "max_rel_error": None,
                            "slip": None, "error": f"needs {family}_forward for its cache"})
            continue
        results.append(check_function(fns, family, kind))
    return results


def _generated() -> dict:
    import generated
    return {n: getattr(generated, n) for n in dir(generated) if n.split("_")[-1] in ("forward", "backward", "alt")}


GENERATED = _generated()


# ----------------------------------------------------------------------------- report

def text(path: Path, results: list[dict]) -> str:
    lines = [f"derive check {path}"]
    for r in results:
        err = "" if r["max_rel_error"] is None else f"   largest relative error {r['max_rel_error']:.1e}"
        lines.append(f"  {'PASS' if r['status'] == 'pass' else 'FAIL'}  {r['function']}{err}")
        if r["status"] == "error":
            lines.append(f"        raised {r['error']}")
        elif r["slip"] is not None:
            s, f = r["slip"], r["slip"]["formula"]
            lines += [f"        known slip {s['id']}: {s['sentence']}",
                      f"        {f['of']}: {f['text']}",
                      f"        see: derive explain {s['topic']}"]
        elif r["status"] == "fail":
            w = r["worst"]
            where = (f"at {tuple(w['index'])}: got {w['got']:.6g}, expected {w['expected']:.6g}" if "index" in w
                     else f"shape {w['shape']}, expected {w['expected_shape']}")
            lines.append(f"        wrong, but not a known slip; {w['output']} differs most in case {w['case']} {where}")
    passed = sum(r["status"] == "pass" for r in results)
    lines.append(f"{passed} of {len(results)} checks pass")
    return "\n".join(lines) + "\n"


def catalogue(family: str = "batchnorm") -> list[dict]:
    return [{"id": s.id, "sentence": s.sentence, "topic": s.topic, "formula": slips.formula(s, family)}
            for s in slips.CATALOGUE if slips.applies(s, family)]


def main(file: Path | None, as_json: bool, list_slips: bool) -> int:
    import json
    if list_slips:
        rows = catalogue()
        if as_json:
            print(json.dumps(rows, indent=1, ensure_ascii=False))
        for r in rows if not as_json else ():
            print(f"{r['id']:<18} {r['sentence']}\n{'':<18} {r['formula']['of']}: "
                  f"{r['formula']['text']}   (derive explain {r['topic']})")
        return 0
    try:
        if file is None:
            raise Usage("derive check: give a file (derive check FILE.py) or --list")
        results = check_file(Path(file))
    except Usage as exc:
        print(str(exc), file=sys.stderr)
        return 2
    except ImportFailed as exc:
        print(str(exc), file=sys.stderr)
        return 1
    ok = all(r["status"] == "pass" for r in results)
    if as_json:
        print(json.dumps({"file": str(file), "passed": ok, "results": results}, indent=1, ensure_ascii=False))
    else:
        sys.stdout.write(text(Path(file), results))
    return 0 if ok else 1
