"""`derive grade DIR --out OUT`: `derive check` over a class, written as Gradescope reads it.

Every ``*.py`` in DIR is one submission.  Each runs in its own child process
(:mod:`derive.learners.sandbox`), ``jobs`` at a time; this process judges every one
(:mod:`derive.learners.check`), so the derived reference values are computed once per run.
It writes

- ``OUT/<file stem>/results.json``: Gradescope's autograder format, one test per check
  (1 point each, a function the file lacks scores 0), ``score`` the sum;
- ``OUT/summary.json``: per submission its score, maximum and named slips; for the class, how
  many submissions made each slip (and how many had a wrong function that is no known slip,
  or could not be run);
- ``OUT/slips.png``: that count as a bar chart (when matplotlib is installed).

Exit 0 once grading ran, whatever the submissions' results.
"""
from __future__ import annotations

import json
import sys
from collections import Counter
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path

from . import check, sandbox
from .cases import Check, checks

UNKNOWN, NOT_RUN = "(wrong, not a known slip)", "(did not import or run)"


def submissions(folder: Path) -> list[Path]:
    if not folder.is_dir():
        raise sandbox.Usage(f"no such folder: {folder}")
    files = sorted(p for p in folder.glob("*.py") if p.is_file())
    if not files:
        raise sandbox.Usage(f"no *.py files in {folder}")
    return files


def results_json(path: Path, outcome: sandbox.Outcome, wanted: tuple[Check, ...]) -> tuple[dict, dict]:
    """(Gradescope's results.json, this submission's line of the summary)."""
    try:
        results, failed = check.judge_outcome(path, outcome, wanted), None
    except (check.ImportFailed, sandbox.Usage) as exc:
        results, failed = [], f"{path.name}: {str(exc).replace(str(path), '').strip()}"
    by_label = {r["function"]: r for r in results}
    tests = []
    for ch in wanted:
        r = by_label.get(ch.label)
        if r is None:
            output = failed or f"{ch.function} is not defined in {path.name}"
            tests.append({"name": ch.label, "score": 0.0, "max_score": 1.0, "status": "failed", "output": output})
            continue
        ok = r["status"] == "pass"
        tests.append({"name": ch.label, "score": 1.0 if ok else 0.0, "max_score": 1.0,
                      "status": "passed" if ok else "failed",
                      "output": "\n".join([check.headline(r), *check.details(r)])})
    score = sum(t["score"] for t in tests)
    slips = sorted({r["slip"]["id"] for r in results if r["slip"]})
    unknown = any(r["status"] == "fail" and not r["slip"] and not r.get("blame") for r in results)
    line = {"file": path.name, "score": score, "max_score": float(len(tests)), "slips": slips,
            "not_a_known_slip": unknown, "error": failed}
    doc = {"score": score, "output": failed or f"{sum(t['status'] == 'passed' for t in tests)} of {len(tests)} "
           "checks pass (derive check, against the proved derivation)", "tests": tests}
    return doc, line


def summary(lines: list[dict]) -> dict:
    counts = Counter(s for line in lines for s in line["slips"])
    counts[UNKNOWN] = sum(line["not_a_known_slip"] for line in lines)
    counts[NOT_RUN] = sum(line["error"] is not None for line in lines)
    made = {k: v for k, v in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])) if v}
    scores = [line["score"] for line in lines]
    return {"submissions": lines,
            "class": {"submissions": len(lines), "mean_score": round(sum(scores) / len(scores), 4),
                      "max_score": lines[0]["max_score"], "slips": made}}


def plot(made: dict, n: int, path: Path) -> str | None:
    """The bar chart of the slips; None, or one line saying why there is none."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib is not installed: no slips.png (pip install matplotlib)"
    names = list(made)[::-1] or ["(no slips)"]
    fig, ax = plt.subplots(figsize=(7, 0.4 * len(names) + 1.2))
    ax.barh(names, [made.get(k, 0) for k in names], color="#4c72b0")
    ax.set_xlabel(f"submissions (of {n})")
    ax.set_title("Slips named by derive grade")
    ax.xaxis.get_major_locator().set_params(integer=True)
    fig.tight_layout()
    fig.savefig(path, dpi=100, metadata={"Software": None})
    plt.close(fig)
    return None


def _write(path: Path, data) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")


def main(folder: Path, out: Path, jobs: int = 2, timeout: float = sandbox.DEFAULT_TIMEOUT,
         functions: frozenset[str] | None = None) -> int:
    try:
        files = submissions(Path(folder))
        out.mkdir(parents=True, exist_ok=True)
    except (sandbox.Usage, OSError) as exc:
        print(f"derive grade: {exc}", file=sys.stderr)
        return 2
    wanted = checks(functions)
    print(f"derive grade: {len(files)} submission{'s' * (len(files) != 1)} in {folder}, {jobs} at a time, "
          f"{timeout:g} s each at most", file=sys.stderr, flush=True)
    lines = {}
    pool = ThreadPoolExecutor(max_workers=jobs)
    try:
        futures = {pool.submit(sandbox.run, p, wanted, timeout): p for p in files}
        for i, fut in enumerate(as_completed(futures), 1):
            path = futures[fut]
            doc, line = results_json(path, fut.result(), wanted)
            _write(out / path.stem / "results.json", doc)
            lines[path] = line
            note = line["error"] or ", ".join(line["slips"]) or ""
            print(f"[{i}/{len(files)}] {path.name}: {line['score']:g}/{line['max_score']:g}"
                  + (f"  {note}" if note else ""), file=sys.stderr, flush=True)
    except KeyboardInterrupt:
        pool.shutdown(wait=False, cancel_futures=True)
        sandbox.kill_all()
        print(f"derive grade: interrupted; {len(lines)} of {len(files)} graded (in {out})", file=sys.stderr)
        return 130
    pool.shutdown()
    doc = summary([lines[p] for p in files])
    _write(out / "summary.json", doc)
    why = plot(doc["class"]["slips"], len(files), out / "slips.png")
    if why:
        print(f"derive grade: {why}", file=sys.stderr)
    c = doc["class"]
    print(f"graded {len(files)} submission{'s' * (len(files) != 1)}: mean score {c['mean_score']:g} of {c['max_score']:g}; "
          f"wrote {out}/<name>/results.json, {out}/summary.json" + ("" if why else f", {out}/slips.png"))
    return 0
