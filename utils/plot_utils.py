"""The repo's plots: weight distributions (as the original drew them) and the pruning sweep."""

import itertools

import matplotlib
import matplotlib.ticker

matplotlib.use("Agg")  # files only; works without a display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from utils.files import replacing  # noqa: E402


WEIGHT_PLOTS = {"before pruning": "weights_distribution_before_pruning.png",
                "after pruning": "weights_distribution_after_pruning.png",
                "after fine-tuning": "weights_distribution_after_fine_tuning.png"}


def plot_weight_distributions(kernels, folder, target):
    """The pruning stage's three histograms into `folder` (WEIGHT_PLOTS), of {stage: kernels}
    (a stage missing: no plot), on one x-range: the widest of the stages' `weight_range`s, so
    that at most 0.1% of any stage's kept weights fall outside it (the dense weights' range
    alone hid the largest kept ones: 8% of them on a run with other data)."""
    titles = {"before pruning": "Weights before pruning",
              "after pruning": f"Weights after pruning ({target}, round 1)",
              "after fine-tuning": f"Weights after pruning ({target}) and fine-tuning"}
    present = {stage: k for stage, k in kernels.items() if k is not None}
    limit = max(weight_range(k) for k in present.values())
    for stage, weights in present.items():
        plot_weight_distribution(weights, folder / WEIGHT_PLOTS[stage], titles[stage], limit)


def weight_range(kernels):
    """A histogram's half-width for these kernels: their 99.9th percentile of |w|, so that a few
    outliers do not squeeze the bulk into the middle bins."""
    values = np.abs(np.concatenate([np.ravel(k) for k in kernels]))
    return float(np.quantile(values[values != 0], 0.999))


def plot_weight_distribution(kernels, path, title, limit, bins=100):
    """Histogram of all non-zero kernel entries in [-limit, limit], written atomically to `path`
    (PNG). Zeros are left out so the pruned weights do not hide the shape of the kept ones.
    """
    value_range = (-limit, limit)
    values = np.concatenate([np.ravel(k) for k in kernels])
    nonzero = values[values != 0]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    ax.hist(nonzero, bins=bins, range=value_range, color="tab:blue")
    ax.set_title(f"{title}\n{len(nonzero):,} non-zero of {len(values):,} weights")
    ax.set_xlabel("weight value")
    ax.set_ylabel("number of weights")
    ax.set_xlim(*value_range)
    _save(fig, ax, path)


def plot_accuracy_vs_compression(rows, dense_accuracy, original, published, network, path):
    """Test accuracy of the sweep's points, one line per schedule, on two axes side by side:
    against the parameter reduction (weights / non-zeros, Han et al. 2015's measure) as pruned,
    and against the byte compression (dense float32 / stored bytes) as stored with weight
    sharing + Huffman, as Deep Compression counts it. The papers' results are marked on the axis
    of the measure they report; the dense baseline and (MLP) the original recipe too.

    `rows`: the sweep's dicts; `original`: one such dict or None; `published`: (label, error %,
    "params" | "bytes", reduction) tuples.
    """
    fig, axes = plt.subplots(1, 2, figsize=(13, 6.5), sharey=True)
    panels = [(axes[0], "param_reduction", "test_accuracy", "params",
               "parameter reduction (weights / non-zero weights), as pruned (float32)"),
              (axes[1], "shared_compression", "shared_test_accuracy", "bytes",
               "compression (dense float32 bytes / stored bytes), shared-5bit-huffman")]
    markers = itertools.cycle("s^DvpP<>hX")  # one per published row: LeNet-5 has 9
    for ax, x, y, measure, label in panels:
        _accuracy_lines(ax, [dict(r, test_accuracy=r[y]) for r in rows], "schedule", x,
                        dense_accuracy)
        if original:
            ax.plot(original[x], 100 * original[y], marker="*", markersize=14, color="tab:red",
                    linestyle="none", label="original recipe (|w| < 0.03, one-shot)")
        for name, error, kind, reduction in published:
            if kind == measure:
                ax.plot(reduction, 100 - error, marker=next(markers), markersize=10,
                        linestyle="none", markeredgecolor="black", label=f"{name}: {error}%")
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(matplotlib.ticker.FormatStrFormatter("%gx"))
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ticks = []
        for tick in sorted({round(r[x]) for r in rows}):  # no two labels on top of each other
            if not ticks or tick >= 1.15 * ticks[-1]:
                ticks.append(tick)
        ax.set_xticks(ticks)
        ax.set_xlabel(label + ", log scale", fontsize=9)
        # below the axes: inside, LeNet-5's 9 published rows hid part of the curve
        ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.13), ncol=2)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("test accuracy (%)")
    fig.suptitle(f"MNIST {network}: accuracy vs compression by pruning schedule")
    _write(fig, path)


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


def _write(fig, path):
    """Tight layout and an atomic PNG write."""
    fig.tight_layout()
    with replacing(path) as tmp:
        fig.savefig(tmp, dpi=100)
    plt.close(fig)


def _save(fig, ax, path):
    """Grid, tight layout, and an atomic PNG write."""
    ax.grid(alpha=0.3)
    _write(fig, path)


def plot_deployments(rows, stored, chosen, network, path):
    """The Pareto plots of `benchmarks/bench_deployments.py`: test accuracy of every deployment
    against its latency at batch 1 and at batch 1000 (log scales, dotted: the dense int8
    .tflite's, the speed-ups' baseline) and against its bytes (the `stored` formats there too,
    as crosses; dotted: the dense float32 .tflite's, the compression's reference); one colour
    per pruning, one marker per runtime; the points chosen on the validation split circled."""
    rows = {**rows, **{f"{name} (stored)": r for name, r in stored.items()}}
    kinds = list(dict.fromkeys(r["kind"] for r in rows.values()))
    palette = plt.get_cmap("tab20").colors  # the default cycle has 10: a benchmark has more
    colours = {k: palette[i % len(palette)] for i, k in enumerate(kinds)}
    markers = {"int8 .tflite": "s", ".tflite": "o", "SavedModel": "^", "TF": "D",
               "(stored)": "x"}
    picked = {c["name"] for c in chosen["fastest"].values()} | {
        c["name"] for c in (chosen["smallest"],) if c} | {
        f"{c['name']} (stored)" for c in (chosen["smallest_stored"],) if c}
    def latency(batch):
        return lambda r: r.get("latency_s", {}).get(batch, {}).get("median_s")

    panels = [("latency at batch 1 (s)", latency("1"), "dense int8 .tflite"),
              ("latency at batch 1000 (s)", latency("1000"), "dense int8 .tflite"),
              ("bytes (files; stored formats as counted)", lambda r: r["bytes"], "dense .tflite")]
    fig, axes = plt.subplots(1, 3, figsize=(17, 5.5), sharey=True)
    for ax, (xlabel, x_of, reference) in zip(axes, panels):
        for name, r in rows.items():
            x = x_of(r)
            if x is None:
                continue
            runtime = next(m for m in markers if name.endswith(m))
            ax.scatter(x, 100 * r["test_accuracy"], color=colours[r["kind"]],
                       marker=markers[runtime], s=60, zorder=3)
            if name in picked:
                ax.scatter(x, 100 * r["test_accuracy"], facecolors="none", edgecolors="black",
                           s=220, linewidths=1.5, zorder=4)
        base = x_of(rows[reference])
        if base is not None:
            ax.axvline(base, color="grey", linestyle=":", linewidth=1)
        ax.set_xscale("log")
        ax.set_xlabel(xlabel)
        ax.grid(alpha=0.3, which="both")
    axes[0].set_ylabel("test accuracy (%)")
    handles = [plt.Line2D([], [], color=colours[k], marker="o", linestyle="", label=k)
               for k in kinds]
    handles += [plt.Line2D([], [], color="black", marker=m, linestyle="", label=name)
                for name, m in markers.items()]
    handles.append(plt.Line2D([], [], marker="o", markerfacecolor="none", markeredgecolor="black",
                              markersize=12, linestyle="",
                              label="chosen on the validation split"))
    axes[2].legend(handles=handles, fontsize=8, loc="lower right")
    fig.suptitle(f"{network}: every deployment, test accuracy against speed and size "
                 f"(dotted: the dense int8 .tflite for speed, the float32 one for size; XNNPACK)")
    _write(fig, path)
