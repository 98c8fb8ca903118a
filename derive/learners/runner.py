"""The child process of `derive check`: import a learner's file and call its functions on given inputs.

Run as ``python -I runner.py TASKS.npz LEARNER.py MEMORY_MB`` in a scratch working folder, by
:mod:`derive.learners.sandbox`.  It imports the standard library and NumPy only (never derive),
limits its own memory, sends the learner's prints to /dev/null, and writes to the stdout it
was started with a stream of records, each ``MAGIC``, an 8-byte length and an ``.npz``: the
arrays the learner's functions returned, or one line saying why there are none.  It judges
nothing: the grader computes every verdict in its own process from these arrays, so a record
forged by the learner's code can only carry arrays, and tampering with modules here changes
nothing there.
"""
import importlib.util
import io
import json
import os
import resource
import sys

MAGIC = b"NDRC"
KINDS = {"U": "str", "S": "bytes", "O": "object", "c": "complex", "M": "datetime", "m": "timedelta", "V": "void"}


def article(name: str) -> str:
    name = "NumPy array" if name == "ndarray" else name
    return f"an {name}" if name[:1] in "aeiou" else f"a {name}"


def one_line(exc: BaseException) -> str:
    try:
        text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    except BaseException:  # a learner's exception whose __str__ fails
        text = type(exc).__name__
    text = " ".join(text.split())
    return text if len(text) <= 200 else text[:197] + "..."


def guarded(fn, *args):
    """(result, None), or (None, why): nothing the learner's code raises or calls stops the runner."""
    try:
        return fn(*args), None
    except SystemExit as exc:
        return None, f"called sys.exit({exc.code!r})"
    except BaseException as exc:
        return None, f"raised {one_line(exc)}"


def to_array(np, value, what: str, limit: int):
    """A float64 copy of a returned value, or (None, why) when it is not an array of numbers."""
    try:
        if value is None:
            return None, f"returned None for {what} where an array was expected"
        if isinstance(value, (np.ndarray, np.number, int, float, bool)):
            a = np.asarray(value)
        elif isinstance(value, (list, tuple)):
            try:
                a = np.asarray(value)
            except ValueError:
                return None, f"returned a ragged {type(value).__name__} for {what} where an array was expected"
            if a.dtype.kind not in "biuf":
                return None, (f"returned a {type(value).__name__} of {KINDS.get(a.dtype.kind, str(a.dtype))} "
                              f"for {what} where an array of numbers was expected")
        else:
            return None, f"returned {article(type(value).__name__)} for {what} where an array was expected"
        if a.dtype.kind not in "biuf":
            return None, (f"returned an array of {KINDS.get(a.dtype.kind, str(a.dtype))} for {what} "
                          f"where an array of numbers was expected")
        if a.size > limit:
            return None, f"returned {a.size} values for {what}, far more than the input has"
        return np.array(a, dtype=np.float64).view(np.ndarray), None
    except BaseException as exc:
        return None, f"returned {article(type(value).__name__)} for {what} that is no array ({one_line(exc)})"


def pair(value, n: int, names: str):
    try:
        if isinstance(value, (tuple, list)) and len(value) == n:
            return tuple(value), None
        size = f" of {len(value)}" if isinstance(value, (tuple, list)) else ""
        return None, f"returned {article(type(value).__name__)}{size} where ({names}) was expected"
    except BaseException as exc:
        return None, f"returned something that is not ({names}): {one_line(exc)}"


class Runner:
    def __init__(self, np, module, meta: dict, arrays: dict):
        self.np, self.module, self.meta, self.arrays = np, module, meta, arrays

    def args(self, family: str, k: int, task: dict, shift: tuple[str, float] | None = None):
        a = {n: self.arrays[f"{family}.{k}.{n}"].copy() for n in ("x", "gamma", "beta")}
        if shift is not None:
            name, t = shift
            a[name] = a[name] + t * self.arrays[f"{family}.{k}.v{name}"]
        p = dict(task["param"])
        if task["running"]:
            p.update({n: self.arrays[f"{family}.{k}.{n}"].copy() for n in ("running_mean", "running_var")})
        groups = self.meta["groups"][family][k]
        return (a["x"], a["gamma"], a["beta"], *(() if groups is None else (groups,)), p)

    def case(self, task: dict, k: int, out: dict):
        """Fill ``out`` with this case's arrays; return (function at fault, why) or None."""
        np, family, fwd = self.np, task["family"], task["forward"]
        limit = 4 * self.arrays[f"{family}.{k}.x"].size + 16
        args = self.args(family, k, task)
        res, err = guarded(getattr(self.module, fwd), *args)
        res, err = (res, err) if err else pair(res, 2, "out, cache")
        if err:
            return fwd, err
        if task["kind"] in ("train", "test"):
            out[f"{k}.out"], err = to_array(np, res[0], "out", limit)
            if err:
                return fwd, err
            if task["kind"] == "train" and task["running"]:
                for name in ("running_mean", "running_var"):
                    got, _ = guarded(lambda p, n: p.get(n) if isinstance(p, dict) else None, args[-1], name)
                    if got is not None:
                        out[f"{k}.{name}"], err = to_array(np, got, f"{name} (stored in the param dict)", limit)
                        if err:
                            return fwd, err
            return None
        own, _ = to_array(np, res[0], "out", limit)  # is the forward right? (to blame the right function)
        if own is not None:
            out[f"{k}.out"] = own
        dout = self.arrays[f"{family}.{k}.dout"].copy()
        grads, err = guarded(getattr(self.module, task["function"]), dout, res[1])
        grads, err = (grads, err) if err else pair(grads, 3, "dx, dgamma, dbeta")
        if err:
            return task["function"], err
        for name, g in zip(("dx", "dgamma", "dbeta"), grads):
            out[f"{k}.{name}"], err = to_array(np, g, name, limit)
            if err:
                return task["function"], err
        fd = {}
        for name in ("x", "gamma", "beta"):  # the learner's own forward, for the central differences
            for sign, t in (("+", self.meta["fd_step"]), ("-", -self.meta["fd_step"])):
                res, err = guarded(getattr(self.module, fwd), *self.args(family, k, task, (name, t)))
                res, err = (res, err) if err else pair(res, 2, "out, cache")
                arr, err = (None, err) if err else to_array(np, res[0], "out", limit)
                if err:
                    return None  # no differences for this case; the backward is still judged
                fd[f"{k}.fd.{name}{sign}"] = arr
        out.update(fd)
        return None


def main() -> int:
    tasks_path, learner, memory_mb = sys.argv[1], sys.argv[2], int(sys.argv[3])
    channel = os.fdopen(os.dup(1), "wb", buffering=0)
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1):  # the learner's input() and prints: /dev/null
        os.dup2(null, fd)
    limit = memory_mb * 2 ** 20
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    resource.setrlimit(resource.RLIMIT_FSIZE, (2 ** 26, 2 ** 26))
    import numpy as np

    def emit(meta: dict, arrays: dict | None = None) -> None:
        buf = io.BytesIO()
        arrays = {k: v for k, v in (arrays or {}).items() if isinstance(v, np.ndarray)}
        np.savez(buf, __meta__=np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8), **arrays)
        data = buf.getvalue()
        channel.write(MAGIC + len(data).to_bytes(8, "little") + data)

    with np.load(tasks_path, allow_pickle=False) as f:
        arrays = {k: f[k] for k in f.files}
    meta = json.loads(arrays.pop("__meta__").tobytes())
    folder = os.path.dirname(os.path.abspath(learner))
    sys.path.insert(0, folder)
    name = "_learner_" + "".join(c if c.isalnum() else "_" for c in os.path.basename(learner)[:-3])
    emit({"type": "start", "stage": "import"})
    spec = importlib.util.spec_from_file_location(name, learner)
    module = importlib.util.module_from_spec(spec)
    _, err = guarded(spec.loader.exec_module, module)
    if err:
        emit({"type": "import_failed", "error": err})
        return 0
    defined = [n for n in meta["functions"] if callable(guarded(getattr, module, n, None)[0])]
    emit({"type": "imported", "defined": defined})
    runner = Runner(np, module, meta, arrays)
    for i, task in enumerate(meta["tasks"]):
        if task["function"] not in defined or task["forward"] not in defined:
            continue
        emit({"type": "start", "task": i})
        out, fault = {}, None
        with np.errstate(all="ignore"):
            for k in range(len(meta["groups"][task["family"]])):
                try:
                    fault = runner.case(task, k, out)
                except BaseException as exc:  # what the learner's objects do to the runner itself
                    fault = (task["function"], f"could not be checked: {one_line(exc)}")
                if fault:
                    fault = {"function": fault[0], "error": fault[1], "case": k}
                    break
        emit({"type": "done", "task": i, "fault": fault}, out)
    emit({"type": "end"})
    return 0


if __name__ == "__main__":
    code = main()
    os._exit(code)  # neither the learner's threads nor its atexit handlers hold the grader up
