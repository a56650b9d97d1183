"""Stage 3: deploy the pruned network with sparse weight matrices and report the compression.

    python deploy_pruned_model.py                 # uses saved_models/network_dense_pruned
    python deploy_pruned_model.py --quick         # smoke test: MNIST test subset

Needs the checkpoint of prune_network.py. Writes to <model-dir>/: saved_model/ (a SavedModel,
`serving_default`: float32 [None, 784] -> logits), sparse_weights.npz (the sparse arrays),
compression_report.txt and config.json.
"""
import tempfile
from pathlib import Path

import keras
import numpy as np

import configs
from networks.network_base import evaluate, logits_function, predict
from networks.network_dense import export_saved_model
from networks.network_sparse import SparseNetwork, sparse_layers
from utils import cli, pruning_utils
from utils.checkpoints import atomic_directory, load_checkpoint, write_json

LOGITS_TOLERANCE = 1e-4  # sparse and dense products sum in different orders


def directory_bytes(path):
    return sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file())


def compression_report(layers, dense_disk, sparse_disk):
    """Printable lines and a dict: per-layer density, model bytes, ratio, size on disk."""
    dense, sparse = pruning_utils.dense_bytes(layers), pruning_utils.coo_bytes(layers)
    lines = [f"{'layer':6s} {'shape':>10s} {'non-zeros':>10s} {'density':>8s}"]
    for l in layers:
        nnz, size = len(l["values"]), int(np.prod(l["shape"]))
        lines.append(f"{l['name']:6s} {'x'.join(map(str, l['shape'])):>10s} {nnz:10,d} "
                     f"{nnz / size:8.2%}")
    lines += [f"dense model:  {dense:10,d} bytes (float32 weights + biases)",
              f"sparse model: {sparse:10,d} bytes (float32 values + int16 row/col + shapes + biases)",
              f"compression:  {dense / sparse:.2f}x",
              f"on disk: dense SavedModel {dense_disk:,d} bytes, sparse SavedModel "
              f"{sparse_disk:,d} bytes ({dense_disk / sparse_disk:.2f}x)"]
    return lines, dict(dense_bytes=dense, sparse_bytes=sparse, compression=dense / sparse,
                       dense_saved_model_bytes=dense_disk, sparse_saved_model_bytes=sparse_disk,
                       nonzeros={l["name"]: len(l["values"]) for l in layers})


def main():
    p = cli.parser(__doc__)
    p.add_argument("--pruned-dir", default=configs.PrunedConfig.model_dir,
                   help="stage-2 checkpoint folder (default %(default)s)")
    p.add_argument("--model-dir", help=f"output folder (default {configs.SparseConfig.model_dir})")
    args = p.parse_args()
    config = configs.override(configs.SparseConfig(), model_dir=args.model_dir, seed=args.seed)
    keras.utils.set_random_seed(config.seed)

    model, _, _ = load_checkpoint(args.pruned_dir, made_by="prune_network.py")
    x_test, y_test = cli.load_data(args)["test"]
    dense_fn = logits_function(model)
    dense_acc, dense_loss = evaluate(dense_fn, x_test, y_test, config.batch_size)
    print(f"pruned model as a dense network: test accuracy {dense_acc:.4f}  loss {dense_loss:.4f}")

    layers = sparse_layers(model)
    network = SparseNetwork(layers)
    sparse_acc, sparse_loss = evaluate(network, x_test, y_test, config.batch_size)
    gap = float(np.max(np.abs(predict(network, x_test) - predict(dense_fn, x_test))))
    print(f"sparse network:                  test accuracy {sparse_acc:.4f}  loss {sparse_loss:.4f}"
          f"  (max |logit difference| {gap:.1e})")
    if gap > LOGITS_TOLERANCE:
        raise ValueError(f"the sparse network disagrees with the dense one (max |logit "
                         f"difference| {gap:.1e} > {LOGITS_TOLERANCE:.0e}): not saved")

    with tempfile.TemporaryDirectory() as tmp:  # the dense export only serves the size comparison
        export_saved_model(model, tmp)
        dense_disk = directory_bytes(tmp)
    with atomic_directory(config.model_dir) as out:
        network.save(out / "saved_model")
        np.savez(out / "sparse_weights.npz", **{f"{l['name']}_{key}": l[key] for l in layers
                                               for key in ("values", "indices", "shape", "bias")})
        lines, report = compression_report(layers, dense_disk, directory_bytes(out / "saved_model"))
        (out / "compression_report.txt").write_text("\n".join(lines) + "\n")
        write_json(out / "config.json", {"config": config, "results": dict(
            dense_test_accuracy=dense_acc, test_accuracy=sparse_acc, test_loss=sparse_loss,
            max_logit_difference=gap, **report)})
    print(*lines, sep="\n")
    print(f"saved {config.model_dir}/")


if __name__ == "__main__":
    cli.run(main)
