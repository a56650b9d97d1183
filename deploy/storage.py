"""Every storage format on disk: written, read back, decoded into the sparse graph and scored."""
import re

from compression import formats
from deploy.dead_units import drop_dead_units
from deploy.sparse_graph import SparseNetwork
from training.evaluate import evaluate


def write_formats(layers, names, out, data, batch_size, shared=None):
    """Write <out>/weights.<format>.npz for each format in `names`, its dead units dropped first
    (`deploy.dead_units`: the same predictions, fewer bytes), read it back, decode and evaluate
    it on the validation and test splits of `data`; ({format: bytes, file_bytes,
    validation_accuracy, test_accuracy, units: {layer: units stored}, parts: {layer: {part:
    bytes}} (`formats.breakdown`)}, {format: decoded layers}).

    `shared` ({bits, or "mixed" for formats.MIXED: layers with their trained codebooks})
    replaces `layers` for those widths.
    """
    results, decoded = {}, {}
    for fmt in names:
        path = out / f"weights.{fmt}.npz"
        bits = re.fullmatch(r"shared-(\d+)bit.*", fmt)
        key = "mixed" if fmt == formats.MIXED else bits and int(bits.group(1))
        encoded = formats.save(path, drop_dead_units((shared or {}).get(key, layers)), fmt)
        _, decoded[fmt] = formats.load(path)
        accuracy = stored_accuracy(decoded[fmt], data, batch_size)
        results[fmt] = dict(bytes=formats.nbytes(encoded), file_bytes=path.stat().st_size,
                            validation_accuracy=accuracy["validation"],
                            test_accuracy=accuracy["test"],
                            units={l["name"]: int(l["shape"][1]) for l in decoded[fmt]},
                            parts={l["name"]: formats.breakdown(arrays)
                                   for l, arrays in zip(decoded[fmt], encoded)})
    return results, decoded


def stored_accuracy(decoded, data, batch_size):
    """{"validation", "test": accuracy} of the sparse network that a storage format's layers
    (decoded) make, on those splits of `data`."""
    network = SparseNetwork(decoded)
    return {split: evaluate(network, *data[split], batch_size)[0]
            for split in ("validation", "test")}
