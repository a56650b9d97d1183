"""`pruning.summary(model)`: what is pruned, how much, in which pattern, and what is not."""
import dataclasses

import keras
import numpy as np

from pruning import registry


@dataclasses.dataclass(frozen=True)
class Row:
    key: str
    shape: tuple
    kept: int
    total: int
    pattern: str  # "unstructured", "1x4", "2:4"; for an unpruned weight, why it is not pruned

    @property
    def sparsity(self):
        return 1.0 - self.kept / self.total


@dataclasses.dataclass(frozen=True)
class Summary:
    """`pruned` and `unpruned` rows (weight matrices; biases and other vectors counted apart),
    counted from the weights themselves: `kept` is the number of non-zeros. Print it."""
    pruned: list
    unpruned: list
    vector_parameters: int  # biases, normalisation scales and offsets: never pruned

    @property
    def sparsity(self):
        """Fraction of zeros over the pruned weights."""
        total = sum(r.total for r in self.pruned)
        return 1.0 - sum(r.kept for r in self.pruned) / total if total else 0.0

    def __str__(self):
        width = max([len(r.key) for r in self.pruned + self.unpruned] + [12])
        lines = [f"  {'weight':{width}s} {'shape':>16s} {'kept / total':>21s} sparsity  pattern"]
        for r in self.pruned:
            lines.append(f"  {r.key:{width}s} {str(r.shape):>16s} {r.kept:>10,d} / "
                         f"{r.total:<10,d} {r.sparsity:6.1%}  {r.pattern}")
        kept, total = sum(r.kept for r in self.pruned), sum(r.total for r in self.pruned)
        lines.append(f"  {'pruned, total':{width}s} {'':>16s} {kept:>10,d} / {total:<10,d} "
                     f"{self.sparsity:6.1%}")
        for r in self.unpruned:
            lines.append(f"  {r.key:{width}s} {str(r.shape):>16s} {r.total:>10,d} not pruned: "
                         f"{r.pattern}")
        lines.append(f"  {self.vector_parameters:,d} parameters in biases and other vectors, "
                     f"not pruned")
        return "\n".join(lines)


def summary(model):
    """Per pruned weight its shape, kept / total, sparsity and pattern, and the weights left
    unpruned (with the reason), read from the model's weights.

    Example:
      print(pruning.summary(model))
    """
    weights, other = registry.scan(model)
    pruned, unpruned = [], []
    for w in weights:
        values = keras.ops.convert_to_numpy(w.variable.value)
        if w.pruning_mask is None:
            unpruned.append(Row(w.key, values.shape, values.size, values.size, "no mask"))
        else:
            pruned.append(Row(w.key, values.shape, int(np.count_nonzero(values)), values.size,
                              w.pruning_mask.pattern))
    for key, shape, why in other:
        unpruned.append(Row(key, shape, int(np.prod(shape)), int(np.prod(shape)), why))
    vectors = sum(int(np.prod(v.shape)) for v in model.weights if len(v.shape) < 2)
    return Summary(pruned, unpruned, vectors)
