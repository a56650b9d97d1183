"""The repo's plots: weight distributions (as the original drew them) and the pruning sweep."""
import shutil

import matplotlib
import matplotlib.ticker

matplotlib.use("Agg")  # files only; works without a display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from utils.atomic import replacing  # noqa: E402


def plot_weight_distribution(kernels, path, title, bins=100, value_range=(-0.15, 0.15)):
    """Histogram of all non-zero kernel entries, written atomically to `path` (PNG).

    Zeros are left out so the pruned weights do not hide the shape of the kept ones.
    """
    values = np.concatenate([np.ravel(k) for k in kernels])
    nonzero = values[values != 0]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    ax.hist(nonzero, bins=bins, range=value_range, color="tab:blue")
    ax.set_title(f"{title}\n{len(nonzero):,} non-zero of {len(values):,} weights")
    ax.set_xlabel("weight value")
    ax.set_ylabel("number of weights")
    ax.set_xlim(*value_range)
    _save(fig, ax, path)


def plot_accuracy_vs_compression(rows, dense_accuracy, original, path):
    """Test accuracy against compression, one line per schedule; dense baseline and the original.

    `rows`: dicts with schedule, compression, test_accuracy; `original`: one such dict.
    """
    fig, ax = plt.subplots(figsize=(8, 5))
    _accuracy_lines(ax, rows, "schedule", "compression", dense_accuracy)
    ax.plot(original["compression"], 100 * original["test_accuracy"], marker="*", markersize=14,
            color="tab:red", linestyle="none", label="original recipe (|w| < 0.03, one-shot)")
    ax.set_xscale("log")
    ax.set_xticks(sorted({round(r["compression"], 1) for r in rows}))
    ax.xaxis.set_major_formatter(matplotlib.ticker.FormatStrFormatter("%gx"))
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.set_xlabel("compression (dense float32 bytes / coo16 sparse bytes), log scale")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title("MNIST 784-512-512-10: accuracy vs compression by pruning schedule")
    ax.legend()
    _save(fig, ax, path)


def plot_layer_sensitivity(rows, dense_accuracy, path):
    """Test accuracy when one layer at a time is pruned (no fine-tuning), by sparsity."""
    fig, ax = plt.subplots(figsize=(8, 5))
    _accuracy_lines(ax, rows, "layer", "sparsity", dense_accuracy, x_scale=100)
    ax.set_xlabel("sparsity of the pruned layer (%)")
    ax.set_ylabel("test accuracy without fine-tuning (%)")
    ax.set_title("Layer sensitivity: one layer pruned at a time")
    ax.legend()
    _save(fig, ax, path)


def _accuracy_lines(ax, rows, group, x, dense_accuracy, x_scale=1):
    """Test accuracy (%) against `x`, one line per value of `group`; the dense baseline."""
    for name in dict.fromkeys(r[group] for r in rows):
        points = sorted((x_scale * r[x], 100 * r["test_accuracy"]) for r in rows
                        if r[group] == name)
        ax.plot(*zip(*points), marker="o", label=name)
    ax.axhline(100 * dense_accuracy, color="black", linestyle="--",
               label=f"dense baseline {100 * dense_accuracy:.2f}%")


def _save(fig, ax, path):
    """Grid, tight layout, and an atomic PNG write."""
    ax.grid(alpha=0.3)
    fig.tight_layout()
    with replacing(path) as tmp:
        fig.savefig(tmp, dpi=100)
    plt.close(fig)


def publish(names, source, dest):
    """Copy the figures `names` from folder `source` into `dest`, each atomically, so that the set
    in `dest` is one run's: a name that `source` lacks is removed from `dest`."""
    for name in names:
        if (source / name).is_file():
            with replacing(dest / name) as tmp:
                shutil.copyfile(source / name, tmp)
        else:
            (dest / name).unlink(missing_ok=True)
