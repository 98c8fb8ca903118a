"""`derive check FILE.py`: judge a learner's CS231n functions against the derived kernels, name the slip.

The learner's file runs in a child process (:mod:`derive.learners.sandbox`): its forward runs,
its own cache goes to its own backward, over the cases of :mod:`derive.learners.cases`.  This
process compares the arrays that come back with :mod:`derive.learners.reference`: relative error
max|got − expected| / max|expected|, infinite where a value is NaN or inf and the derived one is
finite.  A function that fails is compared with every slip of :mod:`derive.learners.slips`; a
slip is named only when it matches every case to a relative error below ``MATCH_TOL``.  When the
learner's forward is wrong, a backward is also compared with the derivative of that forward: the
slip's derived backward, the derived backward fed that forward's values, and the central
differences of the learner's own forward.
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np

from . import reference, sandbox, slips
from .cases import ARGS, FD_STEP, GRADS, Check, cases, checks
from .sandbox import DEFAULT_TIMEOUT, Usage

PASS_TOL = 1e-6       #: largest relative error of a correct function (float64)
MATCH_TOL = 1e-6      #: largest relative error, on every case, for a slip to be named
DISTINCT = 1e-4       #: a slip must differ from the correct answer by more than this somewhere
FD_TOL = 1e-5         #: central differences of the learner's forward against its backward, relative


class ImportFailed(Exception):
    """The learner's file fails, exits, hangs or crashes on import: exit code 1, one line."""


def rel_error(got, expected) -> float:
    """max|got − expected| / max|expected|; inf for a missing or mis-sized output, and for NaN or
    inf where the expected value is finite (max(0, nan) would be 0)."""
    if got is None or expected is None or np.size(got) != np.size(expected):
        return float("inf")
    g = np.asarray(got, dtype=np.float64).ravel()
    e = np.asarray(expected, dtype=np.float64).ravel()
    finite = np.isfinite(e)
    g, e = g[finite], e[finite]
    if g.size and not np.all(np.isfinite(g)):
        return float("inf")
    scale = max(float(np.max(np.abs(e))) if e.size else 0.0, 1e-12)
    return float(np.max(np.abs(g - e))) / scale if g.size else 0.0


def case_error(got: dict, ref: dict) -> float:
    return max(rel_error(got.get(k), v) for k, v in ref.items())


def worst(check: Check, got_all: list, ref_all: list) -> dict:
    """Where the learner's output differs most from the derived one, and which case that is."""
    k = max(range(len(ref_all)), key=lambda i: case_error(got_all[i], ref_all[i]))
    got, ref = got_all[k], ref_all[k]
    name = max(ref, key=lambda n: rel_error(got.get(n), ref[n]))
    exp, g = np.asarray(ref[name], dtype=np.float64), got.get(name)
    where = {"case": k, "where": cases(check.family)[k].describe(check.mode), "output": name}
    if g is None or g.size != exp.size:
        return {**where, "shape": None if g is None else list(g.shape), "expected_shape": list(exp.shape)}
    g = g.reshape(exp.shape)
    diff = np.abs(g - exp)
    index = np.unravel_index(int(np.argmax(np.where(np.isnan(diff), np.inf, diff))), exp.shape)
    return {**where, "index": [int(i) for i in index], "got": float(g[index]), "expected": float(exp[index])}


# ----------------------------------------------------------------------------- one check

def name_slip(check: Check, got_all: list, ref_all: list) -> dict | None:
    for slip in slips.CATALOGUE:
        if not slips.applies(slip, check.family):
            continue
        matched, distinct = True, False
        for case, got, ref in zip(cases(check.family), got_all, ref_all):
            want = reference.slipped(slip.id, check.family, check.kind, case.index)
            if want is None:
                matched = False
                break
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
            return slip_info(slip, check.family)
    return None


def slip_info(slip: slips.Slip, family: str) -> dict:
    return {"id": slip.id, "sentence": slip.sentence, "topic": slip.topic, "formula": slips.formula(slip, family)}


def own_differences(check: Check, got_all: list, fd_all: list) -> bool:
    """Is the backward the derivative of the learner's own forward, along each case's directions?
    Σ dout·(f(a + t v) − f(a − t v)) / 2t against Σ da·v for a = x, γ, β."""
    seen = False
    for case, got, fd in zip(cases(check.family), got_all, fd_all):
        if len(fd) < 2 * len(ARGS):
            continue
        for a in ARGS:
            v, grad, step = case.arrays["v" + a], got.get(GRADS[a]), fd[a + "+"] - fd[a + "-"]
            if grad is None or grad.size != v.size or step.size != case.dout.size:
                return False
            change = case.dout.ravel() * step.ravel() / (2 * FD_STEP)
            numeric, analytic = float(np.sum(change)), float(np.sum(grad.ravel() * v.ravel()))
            scale = max(abs(numeric), abs(analytic), float(np.sum(np.abs(change))), 1e-300)
            if not abs(numeric - analytic) <= FD_TOL * scale:
                return False
        seen = True
    return seen


def blame(check: Check, got_all: list, fd_all: list, forward: dict | None) -> dict | None:
    """When the learner's forward is wrong: is this backward right for it? (a note, and the slip)"""
    outs = [reference.expected(check.family, "train", c.index)["out"] for c in cases(check.family)]
    if all(rel_error(g.get("out"), o) <= PASS_TOL for g, o in zip(got_all, outs)):
        return None
    fslip = (forward or {}).get("slip")
    first = f"fix the forward first ({forward['function']}: known slip {fslip['id']})" if fslip \
        else "fix the forward first"
    if fslip is not None:
        for source, note in ((reference.slipped, "your backward is right for your forward"),
                             (reference.fed, "your backward is right: it is the derived one, fed your forward's cache")):
            refs = [source(fslip["id"], check.family, check.kind, c.index) if source is reference.slipped
                    else source(fslip["id"], check.family, c.index) for c in cases(check.family)]
            if all(case_error(g, r) < MATCH_TOL for g, r in zip(got_all, refs)):
                return {"note": f"{note}; {first}", "slip": fslip if source is reference.slipped else None}
    if own_differences(check, got_all, fd_all):
        return {"note": f"your backward is right for your forward (it matches central differences of your "
                        f"forward); {first}", "slip": None}
    return {"note": f"your forward is wrong, and this backward is not its derivative either; {first}, "
                    "then check again", "slip": None}


def judge(check: Check, result, forward: dict | None) -> dict:
    """The verdict on one check from the arrays the child sent: (fault or None, {key: array})."""
    out = {"function": check.label, "status": "pass", "max_rel_error": 0.0, "slip": None}
    fault, arrays = result
    family_cases = cases(check.family)
    if fault is not None:
        fault = fault if isinstance(fault, dict) else {}
        k = fault.get("case") if fault.get("case") in range(len(family_cases)) else 0
        fn = str(fault.get("function"))
        why = f"{str(fault.get('error'))[:300]} in {family_cases[k].describe(check.mode)}"
        err = why if fn == check.function else f"{fn} {why}; the backward needs its cache"
        return {**out, "status": "error", "max_rel_error": None, "error": err}
    got_all = [{n: arrays.get(f"{c.index}.{n}") for n in ("out", "running_mean", "running_var", *GRADS.values())}
               for c in family_cases]
    got_all = [{n: v for n, v in g.items() if v is not None} for g in got_all]
    ref_all = [reference.expected(check.family, check.kind, c.index) for c in family_cases]
    ref_all = [{n: v for n, v in r.items() if v is not None} for r in ref_all]
    out["max_rel_error"] = max(case_error(g, r) for g, r in zip(got_all, ref_all))
    if out["max_rel_error"] <= PASS_TOL:
        return out
    if not np.isfinite(out["max_rel_error"]):
        out["max_rel_error"] = None
    out["status"] = "fail"
    blamed = None
    if check.backward:
        fd_all = [{f"{a}{s}": arrays[f"{c.index}.fd.{a}{s}"] for a in ARGS for s in "+-"
                   if f"{c.index}.fd.{a}{s}" in arrays} for c in family_cases]
        blamed = blame(check, got_all, fd_all, forward)
    if blamed is not None:
        out.update(blame="forward", note=blamed["note"], slip=blamed["slip"])
    else:
        out["slip"] = name_slip(check, got_all, ref_all)
    if out["slip"] is None:
        out["worst"] = worst(check, got_all, ref_all)
    return out


# ----------------------------------------------------------------------------- a file

def judge_outcome(path: Path, outcome: sandbox.Outcome, wanted: tuple[Check, ...]) -> list[dict]:
    """Every check of the functions the file defines (of ``wanted``), in order."""
    if outcome.import_error is not None:
        raise ImportFailed(f"{path} {outcome.import_error}")
    defined = set(outcome.defined)
    if not defined & {c.function for c in wanted}:
        raise Usage(f"{path} defines none of {', '.join(sorted({c.function for c in wanted}))}")
    results, forwards, stopped = [], {}, None
    for i, ch in enumerate(wanted):
        if ch.function not in defined:
            continue
        base = {"function": ch.label, "status": "error", "max_rel_error": None, "slip": None}
        if f"{ch.family}_forward" not in defined:
            results.append({**base, "error": f"needs {ch.family}_forward for its cache"})
        elif i in outcome.done:
            results.append(judge(ch, outcome.done[i], forwards.get(ch.family)))
            if ch.kind == "train":
                forwards[ch.family] = results[-1]
        elif stopped is None and i == outcome.running:
            stopped = ch.label
            results.append({**base, "error": outcome.how})
        else:
            results.append({**base, "error": f"not run: the file {outcome.how or 'stopped early'}"
                                             + (f" in {stopped}" if stopped else "")})
    return results


def check_file(path: Path, timeout: float = DEFAULT_TIMEOUT, functions: frozenset[str] | None = None) -> list[dict]:
    """Run the learner's file in a child process and judge what it returns."""
    wanted = checks(functions)
    return judge_outcome(Path(path), sandbox.run(Path(path), wanted, timeout), wanted)


# ----------------------------------------------------------------------------- report

def details(r: dict) -> list[str]:
    """The lines under one result's PASS/FAIL line: the error, the note, the slip or where it differs."""
    lines = [r["error"]] if r["status"] == "error" else []
    if r.get("note"):
        lines.append(r["note"])
    if r["slip"] is not None:
        s, f = r["slip"], r["slip"]["formula"]
        lines += [f"known slip {s['id']}: {s['sentence']}", f"{f['of']}: {f['text']}",
                  f"see: derive explain {s['topic']}"]
    elif r["status"] == "fail":
        w = r["worst"]
        at = (f"at {tuple(w['index'])}: got {w['got']:.6g}, expected {w['expected']:.6g}" if "index" in w
              else f"shape {w['shape']}, expected {w['expected_shape']}")
        lead = "" if r.get("note") else "wrong, but not a known slip; "
        lines.append(f"{lead}{w['output']} differs most in {w['where']} {at}")
    return lines


def headline(r: dict) -> str:
    err = "" if r["max_rel_error"] is None else f"   largest relative error {r['max_rel_error']:.1e}"
    return f"{'PASS' if r['status'] == 'pass' else 'FAIL'}  {r['function']}{err}"


def text(path: Path, results: list[dict]) -> str:
    lines = [f"derive check {path}"]
    for r in results:
        lines += [f"  {headline(r)}", *(f"        {line}" for line in details(r))]
    passed = sum(r["status"] == "pass" for r in results)
    lines.append(f"{passed} of {len(results)} checks pass")
    return "\n".join(lines) + "\n"


def catalogue(family: str = "batchnorm") -> list[dict]:
    return [slip_info(s, family) for s in slips.CATALOGUE if slips.applies(s, family)]


def emit(text_out: str, stream=None) -> None:
    """Write to stdout; a reader that went away (`derive check --json F | head`) is not an error."""
    stream = stream or sys.stdout
    try:
        stream.write(text_out)
        stream.flush()
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), stream.fileno())


def main(file: Path | None, as_json: bool, list_slips: bool, timeout: float = DEFAULT_TIMEOUT) -> int:
    if list_slips:
        rows = catalogue()
        emit(json.dumps(rows, indent=1, ensure_ascii=False) + "\n" if as_json else "".join(
            f"{r['id']:<18} {r['sentence']}\n{'':<18} {r['formula']['of']}: "
            f"{r['formula']['text']}   (derive explain {r['topic']})\n" for r in rows))
        return 0
    try:
        if file is None:
            raise Usage("give a file (derive check FILE.py) or --list")
        results = check_file(Path(file), timeout)
    except Usage as exc:
        print(f"derive check: {exc}", file=sys.stderr)
        return 2
    except ImportFailed as exc:
        print(f"derive check: {exc}", file=sys.stderr)
        return 1
    ok = all(r["status"] == "pass" for r in results)
    if as_json:
        emit(json.dumps({"file": str(file), "passed": ok, "results": results}, indent=1, ensure_ascii=False) + "\n")
    else:
        emit(text(Path(file), results))
    return 0 if ok else 1
