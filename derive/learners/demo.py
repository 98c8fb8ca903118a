"""`derive demo`: seed 002's network done right, trained on scikit-learn's bundled digits.

A two-layer MLP in the features x batch layout (Z[1] = W[1] X + b[1], X is (64, batch)):
(a) no normalization; (b) batch norm on Z[1] with the derived backward
(generated.batchnorm_forward/backward with bn_param axis=1); (c) batch norm with
the naive backward (seed 000: can backprop ignore the normalization?), derived by
the engine from the graph with stop-gradients around mu and sigma^2
(derive.slips 'naive'); (d) the bias b[1] before batch norm under (b) and (c):
Ioffe & Szegedy's example (seed 004).  Fixed seeds: the same numbers on every run.

The table goes to stdout; the two plots go to ``--out DIR``, or, inside a normderive
checkout, to its docs/ (where the README shows them).  Anywhere else, without --out,
nothing is written.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

EPOCHS, BATCH, LR, HIDDEN, SEED = 15, 64, 0.5, 64, 0


def naive_backward():
    from ..math import evaluate
    from . import slips
    d = slips.BY_ID["naive"].derived("batchnorm")

    def backward(dout, z, gamma, beta):
        view = evaluate.View(z.shape, (1,), (0,))
        env = evaluate.forward(d.train, z, {"gamma": gamma, "beta": beta}, {}, view)
        b = evaluate.backward(d.stages, d.params, env, dout, view)
        return b["dx"], b["dgamma"].ravel(), b["dbeta"].ravel()
    return backward


def data():
    from sklearn.datasets import load_digits
    digits = load_digits()
    x, y = digits.data / 16.0, digits.target
    order = np.random.default_rng(SEED).permutation(len(y))
    x, y = x[order].T, y[order]                      # features x batch
    return (x[:, :1400], y[:1400]), (x[:, 1400:], y[1400:])


def train(kind: str, progress) -> dict:
    """kind: 'none', 'derived' or 'naive'. Returns the loss per step, test accuracy per epoch, |b1|."""
    import generated
    (xtr, ytr), (xte, yte) = data()
    rng = np.random.default_rng(SEED)
    w1, b1 = rng.normal(size=(HIDDEN, 64)) * 0.5, np.zeros((HIDDEN, 1))
    w2, b2 = rng.normal(size=(10, HIDDEN)) * np.sqrt(1 / HIDDEN), np.zeros((10, 1))
    gamma, beta = np.ones(HIDDEN), np.zeros(HIDDEN)
    bn = {"mode": "train", "axis": 1}
    naive = naive_backward() if kind == "naive" else None
    log = {"loss": [], "accuracy": [], "bias": []}

    def forward(x, mode):
        z = w1 @ x + b1
        cache = None
        if kind != "none":
            bn["mode"] = mode
            z, cache = generated.batchnorm_forward(z, gamma, beta, bn)
        a = np.maximum(z, 0)
        return z, a, w2 @ a + b2, cache

    for _ in progress(range(EPOCHS), desc=f"{kind:>7}"):
        order = rng.permutation(xtr.shape[1])
        for start in range(0, len(order), BATCH):
            idx = order[start:start + BATCH]
            x, y = xtr[:, idx], ytr[idx]
            zpre = w1 @ x + b1
            z, a, s, cache = forward(x, "train")
            p = np.exp(s - s.max(axis=0))
            p /= p.sum(axis=0)
            log["loss"].append(float(-np.mean(np.log(p[y, np.arange(len(y))]))))
            ds = p.copy()
            ds[y, np.arange(len(y))] -= 1
            ds /= len(y)
            dw2, db2 = ds @ a.T, ds.sum(axis=1, keepdims=True)
            dz = (w2.T @ ds) * (z > 0)
            if kind == "derived":
                dz, dgamma, dbeta = generated.batchnorm_backward(dz, cache)
            elif kind == "naive":
                dz, dgamma, dbeta = naive(dz, zpre, gamma, beta)
            if kind != "none":
                gamma, beta = gamma - LR * dgamma.ravel(), beta - LR * dbeta.ravel()
            w1, b1 = w1 - LR * dz @ x.T, b1 - LR * dz.sum(axis=1, keepdims=True)
            w2, b2 = w2 - LR * dw2, b2 - LR * db2
            log["bias"].append(float(np.abs(b1).mean()))
        log["accuracy"].append(float(np.mean(forward(xte, "test")[2].argmax(axis=0) == yte)))
    return log


def plots(runs: dict, out: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.6))
    for kind, log in runs.items():
        loss = np.convolve(log["loss"], np.ones(20) / 20, mode="valid")
        ax1.plot(loss, label=LABELS[kind])
        ax2.plot(range(1, EPOCHS + 1), log["accuracy"], marker="o", label=LABELS[kind])
    ax1.set(xlabel="step", ylabel="training loss (mean of 20 steps)", yscale="log")
    ax2.set(xlabel="epoch", ylabel="test accuracy")
    ax1.legend()
    fig.tight_layout()
    fig.savefig(out / "demo_curves.png", dpi=100)
    fig, ax = plt.subplots(figsize=(6, 3.6))
    for kind in ("derived", "naive"):
        ax.plot(runs[kind]["bias"], label=LABELS[kind])
    ax.set(xlabel="step", ylabel="mean |b[1]| (bias before batch norm)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "demo_bias.png", dpi=100)
    plt.close("all")


LABELS = {"none": "no normalization", "derived": "batch norm, derived backward",
          "naive": "batch norm, naive backward"}


def plots_folder(out: Path | None) -> Path | None:
    """Where the plots go: ``out``, else the docs/ of the checkout around the current directory."""
    if out is not None:
        return out
    from ..project import find_checkout
    checkout = find_checkout(Path.cwd())
    return checkout / "docs" if checkout is not None else None


def main(epochs: int | None = None, out: Path | None = None) -> int:
    """Train the three networks, print the table and write the plots to :func:`plots_folder`."""
    global EPOCHS
    try:
        import matplotlib  # noqa: F401
        import sklearn  # noqa: F401
        from tqdm import tqdm
    except ImportError as exc:
        print(f"derive demo: needs {exc.name}; pip install 'normderive[learn]'", file=sys.stderr)
        return 2
    EPOCHS = epochs or EPOCHS
    t = time.perf_counter()
    folder = plots_folder(out)
    if folder is not None and folder.exists() and not folder.is_dir():
        print(f"derive demo: --out {folder} is a file, not a folder", file=sys.stderr)
        return 2
    runs = {kind: train(kind, tqdm) for kind in ("none", "derived", "naive")}
    if folder is not None:
        folder.mkdir(parents=True, exist_ok=True)
        plots(runs, folder)
    print(f"| network (digits, {EPOCHS} epochs, batch {BATCH}, lr {LR}) | test accuracy | final mean abs b[1] |")
    print("|---|---|---|")
    for kind, log in runs.items():
        print(f"| {LABELS[kind]} | {log['accuracy'][-1]:.3f} | {log['bias'][-1]:.4f} |")
    seconds = f"({time.perf_counter() - t:.1f} s)"
    if folder is None:
        print(f"plots: none written (not in a normderive checkout); pass --out DIR to save them  "
              f"{seconds}", file=sys.stderr)
    else:
        print(f"plots: {folder / 'demo_curves.png'}, {folder / 'demo_bias.png'}  {seconds}", file=sys.stderr)
    return 0
