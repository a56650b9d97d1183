"""Plots of the weight distribution, as the original repo drew them."""
import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; works without a display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


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
    ax.grid(alpha=0.3)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.stem + ".tmp.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    os.replace(tmp, path)
