"""Stage 3: deploy the pruned network with sparse weight matrices and report the compression.

    python deploy_pruned_model.py                       # coo16, the original's layout
    python deploy_pruned_model.py --format shared-5bit  # deploy the 5-bit weight-shared model
    python deploy_pruned_model.py --quick               # smoke test: MNIST test subset

Needs the checkpoint of prune_network.py. Every storage format (utils/sparse_formats.py) is written
to <model-dir>/weights.<format>.npz, read back, decoded into the sparse network and evaluated; the
one chosen with --format is exported as <model-dir>/saved_model/ (`serving_default`: float32
[None, 784] -> logits). Also writes compression_report.txt, config.json and stage.json.
<model-dir> must be new, empty or this script's earlier output; it is replaced only when the run
succeeds.
"""
import tempfile
from pathlib import Path

import keras
import numpy as np

import configs
from networks.network_base import evaluate, logits_function, predict
from networks.network_dense import export_saved_model, load_pruned
from networks.network_sparse import SparseNetwork, sparse_layers
from utils import cli, pruning_utils, sparse_formats
from utils.checkpoints import stage_output, write_json

LOGITS_TOLERANCE = 1e-4  # sparse and dense products sum in different orders


def directory_bytes(path):
    return sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file())


def layer_lines(layers):
    lines = [f"{'layer':6s} {'shape':>10s} {'non-zeros':>10s} {'density':>8s}"]
    for l in layers:
        nnz, size = len(l["values"]), int(np.prod(l["shape"]))
        lines.append(f"{l['name']:6s} {'x'.join(map(str, l['shape'])):>10s} {nnz:10,d} "
                     f"{nnz / size:8.2%}")
    return lines


def evaluate_formats(layers, formats, out, x_test, y_test, batch_size):
    """Write, read back, decode and evaluate each format; {format: results}, {format: layers}."""
    results, decoded = {}, {}
    for fmt in formats:
        path = out / f"weights.{fmt}.npz"
        encoded = sparse_formats.save(path, layers, fmt)
        _, decoded[fmt] = sparse_formats.load(path)
        accuracy, _ = evaluate(SparseNetwork(decoded[fmt]), x_test, y_test, batch_size)
        results[fmt] = dict(bytes=sparse_formats.nbytes(encoded), file_bytes=path.stat().st_size,
                            test_accuracy=accuracy)
    return results, decoded


def main():
    p = cli.parser(__doc__)
    p.add_argument("--format", default="coo16", type=cli.storage_format,
                   help=f"format of the exported SavedModel's weights: "
                        f"{', '.join(sparse_formats.FORMATS)} or shared-Nbit, N in 1..8 "
                        f"(default %(default)s)")
    p.add_argument("--pruned-dir", type=cli.path,
                   default=configs.repo_path(configs.PrunedConfig.model_dir),
                   help="stage-2 checkpoint folder (default %(default)s)")
    p.add_argument("--model-dir", type=cli.path,
                   default=configs.repo_path(configs.SparseConfig.model_dir),
                   help="output folder (default %(default)s)")
    args = p.parse_args()
    config = configs.override(configs.SparseConfig(), model_dir=str(args.model_dir),
                              seed=args.seed)
    formats = list(dict.fromkeys(sparse_formats.FORMATS + [args.format]))
    keras.utils.set_random_seed(config.seed)

    with stage_output(config.model_dir, "deploy_pruned_model.py",
                      inputs={"--pruned-dir": args.pruned_dir}) as out:
        model, _ = load_pruned(args.pruned_dir)
        x_test, y_test = cli.load_data(args)["test"]
        dense_fn = logits_function(model)
        dense_acc, dense_loss = evaluate(dense_fn, x_test, y_test, config.batch_size)
        print(f"pruned model as a dense network: test accuracy {dense_acc:.4f}  "
              f"loss {dense_loss:.4f}")

        layers = sparse_layers(model)
        exact = SparseNetwork(layers)
        sparse_acc, sparse_loss = evaluate(exact, x_test, y_test, config.batch_size)
        gap = float(np.max(np.abs(predict(exact, x_test) - predict(dense_fn, x_test))))
        print(f"sparse network:                  test accuracy {sparse_acc:.4f}  "
              f"loss {sparse_loss:.4f}  (max |logit difference| {gap:.1e})")
        if gap > LOGITS_TOLERANCE:
            raise ValueError(f"the sparse network disagrees with the dense one (max |logit "
                             f"difference| {gap:.1e} > {LOGITS_TOLERANCE:.0e}): not saved")

        with tempfile.TemporaryDirectory() as tmp:  # the dense export: only for its size
            export_saved_model(model, tmp)
            dense_disk = directory_bytes(tmp)
        dense_bytes = pruning_utils.dense_bytes(layers)
        results, decoded = evaluate_formats(layers, formats, out, x_test, y_test, config.batch_size)
        SparseNetwork(decoded[args.format]).save(out / "saved_model")
        saved_disk = directory_bytes(out / "saved_model")
        lines = layer_lines(layers) + [
            f"dense model: {dense_bytes:,d} bytes (float32 weights + biases); "
            f"SavedModel {dense_disk:,d} bytes on disk",
            f"{'format':20s} {'bytes':>9s} {'compression':>11s} {'file bytes':>10s} "
            f"{'test acc':>9s}"]
        for fmt, r in results.items():
            r["compression"] = dense_bytes / r["bytes"]
            lines.append(f"{fmt:20s} {r['bytes']:9,d} {r['compression']:10.2f}x "
                         f"{r['file_bytes']:10,d} {r['test_accuracy']:9.4f}")
        lines.append(f"deployed: {args.format}, SavedModel {saved_disk:,d} bytes on disk "
                     f"(dense SavedModel / sparse: {dense_disk / saved_disk:.2f}x)")
        (out / "compression_report.txt").write_text("\n".join(lines) + "\n")
        write_json(out / "config.json", {"config": config, "results": dict(
            format=args.format, dense_test_accuracy=dense_acc, test_accuracy=sparse_acc,
            test_loss=sparse_loss, max_logit_difference=gap, dense_bytes=dense_bytes,
            compression=results["coo16"]["compression"], dense_saved_model_bytes=dense_disk,
            sparse_saved_model_bytes=saved_disk, formats=results,
            nonzeros={l["name"]: len(l["values"]) for l in layers})})
    print(*lines, sep="\n")
    print(f"saved {config.model_dir}/")


if __name__ == "__main__":
    cli.run(main)
