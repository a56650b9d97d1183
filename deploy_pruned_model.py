"""Stage 3: deploy the pruned network with sparse weight matrices and report the compression.

    python deploy_pruned_model.py                       # coo16, the original's layout
    python deploy_pruned_model.py --format shared-5bit  # deploy the 5-bit weight-shared model
    python deploy_pruned_model.py --network lenet-5     # conv kernels as [kh*kw*cin, cout]
    python deploy_pruned_model.py --quick               # smoke test: MNIST subset

Needs the checkpoint of prune_network.py (of the same --network and data). Trained quantization
first: the 5-bit shared-weight codebooks (--codebook-bits) are fine-tuned for --codebook-epochs,
codes fixed, and kept if they score better on the validation split. Every storage format
(utils/sparse_formats.py) is written to <model-dir>/weights.<format>.npz, read back, decoded into
the sparse network and evaluated; the one chosen with --format is exported as
<model-dir>/saved_model/ (`serving_default`: float32 [None, H*W] -> logits). The pruned float32
weights are also converted to LiteRT: <model-dir>/model.tflite (sparse weights, float32) and
model_int8.tflite (int8 weights and activations, calibrated on --calibration-images training
images), each read back to report how every weight is stored, and evaluated in LiteRT's
interpreter. Also writes compression_report.txt, config.json and stage.json.
<model-dir> must be new, empty or this script's earlier output; it is replaced only when the run
succeeds.
"""
import re
import tempfile
from pathlib import Path

import keras
import numpy as np

import configs
from networks.network_base import evaluate, logits_function, predict
from networks.network_dense import check_data, export_saved_model, load_pruned, weight_layers
from networks.network_sparse import SparseNetwork, sparse_layers
from networks.network_tflite import TFLiteNetwork, convert, layer_storage
from utils import cli, pruning_utils, sparse_formats, trained_quantization
from utils.checkpoints import stage_output, write_json

LOGITS_TOLERANCE = 1e-4  # sparse and dense products sum in different orders


def directory_bytes(path):
    return sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file())


def layer_lines(layers):
    lines = [f"{'layer':6s} {'kernel':>14s} {'non-zeros':>10s} {'density':>8s}"]
    for l in layers:
        nnz, size = len(l["values"]), int(np.prod(l["shape"]))
        shape = l["spec"].get("kernel_shape", l["shape"])
        lines.append(f"{l['name']:6s} {'x'.join(map(str, shape)):>14s} {nnz:10,d} "
                     f"{nnz / size:8.2%}")
    return lines


def quantize(model, layers, bits, epochs, data, config):
    """Trained quantization at `bits`: (the shared layers to store, report lines, results).

    The trained codebooks are kept only if they beat k-means' on the validation split.
    """
    shared = trained_quantization.share_weights(layers, bits)
    val_fn = logits_function(model)
    for layer, l in zip(weight_layers(model), shared):  # the k-means model, to score it
        layer.kernel.assign(pruning_utils.from_coo(l).reshape(layer.kernel.shape))
    kmeans = {split: evaluate(val_fn, *data[split])[0] for split in ("validation", "test")}
    trained, history = trained_quantization.train_codebooks(
        model, shared, data, epochs, config.codebook_learning_rate, seed=config.seed)
    after = {split: evaluate(val_fn, *data[split])[0] for split in ("validation", "test")}
    keep = after["validation"] > kmeans["validation"]
    lines = [f"trained quantization ({bits}-bit codebooks, {epochs} epochs, codes fixed): "
             f"test accuracy {kmeans['test']:.4f} (k-means) -> {after['test']:.4f} (trained); "
             f"validation {kmeans['validation']:.4f} -> {after['validation']:.4f}: "
             f"{'trained' if keep else 'k-means'} codebooks stored"]
    return (trained if keep else shared), lines, dict(
        bits=bits, epochs=epochs, kmeans=kmeans, trained=after, history=history,
        stored="trained" if keep else "k-means")


def evaluate_formats(layers, formats, out, x_test, y_test, batch_size, shared=None):
    """Write, read back, decode and evaluate each format; {format: results}, {format: layers}.

    `shared` ({bits: layers with their codebooks}) replaces `layers` for those bit widths.
    """
    results, decoded = {}, {}
    for fmt in formats:
        path = out / f"weights.{fmt}.npz"
        bits = re.fullmatch(r"shared-(\d+)bit.*", fmt)
        encoded = sparse_formats.save(path, (shared or {}).get(bits and int(bits.group(1)), layers),
                                      fmt)
        _, decoded[fmt] = sparse_formats.load(path)
        accuracy, _ = evaluate(SparseNetwork(decoded[fmt]), x_test, y_test, batch_size)
        results[fmt] = dict(bytes=sparse_formats.nbytes(encoded), file_bytes=path.stat().st_size,
                            test_accuracy=accuracy)
    return results, decoded


def export_tflite(model, out, data, config, dense_logits):
    """Write model.tflite (float32, sparse weights) and model_int8.tflite; (report lines, results).

    Each is compared with the same network converted with dense weights, by size and accuracy.
    Raises ValueError, before anything is saved, if the float32 model's logits are not those of
    the Keras model.
    """
    x_test, y_test = data["test"]
    calibration = data["train"][0][:config.calibration_images]
    variants = {"model.tflite": convert(model),
                "dense float32": convert(model, sparse=False),
                "model_int8.tflite": convert(model, representative=calibration),
                "dense int8": convert(model, sparse=False, representative=calibration)}
    results, lines = {}, ["LiteRT (.tflite), run in LiteRT's interpreter on the test set:"]
    for name, content in variants.items():
        network = TFLiteNetwork(content)
        logits = predict(network, x_test)
        results[name] = dict(bytes=len(content), layers=layer_storage(content),
                             xnnpack=network.xnnpack,  # False: XNNPACK could not run it
                             test_accuracy=float(np.mean(logits.argmax(1) == y_test)),
                             max_logit_difference=float(np.max(np.abs(logits - dense_logits))))
    float_gap = results["model.tflite"]["max_logit_difference"]
    if float_gap > LOGITS_TOLERANCE:
        raise ValueError(f"model.tflite disagrees with the Keras model (max |logit difference| "
                         f"{float_gap:.1e} > {LOGITS_TOLERANCE:.0e}): not saved")
    for name in ("model.tflite", "model_int8.tflite"):
        (out / name).write_bytes(variants[name])
    lines.append(f"  {'file':18s} {'bytes':>9s} {'vs dense':>9s} {'test acc':>9s} "
                 f"{'max |logit diff|':>16s}  weights stored as")
    for name, r in results.items():
        dense = results["dense int8" if "int8" in name else "dense float32"]["bytes"]
        r["compression"] = dense / r["bytes"]
        storage = ", ".join(f"{l['storage']} ({l['bytes']:,d} B)" for l in r["layers"])
        lines.append(f"  {name:18s} {r['bytes']:9,d} {r['compression']:8.2f}x "
                     f"{r['test_accuracy']:9.4f} {r['max_logit_difference']:16.1e}  {storage}")
    float_dense = results["dense float32"]["bytes"]
    lines.append(f"  model.tflite is {float_dense / results['model.tflite']['bytes']:.1f}x and "
                 f"model_int8.tflite {float_dense / results['model_int8.tflite']['bytes']:.1f}x "
                 f"smaller than the dense float32 .tflite")
    return lines, results


def main():
    p = cli.parser(__doc__)
    p.add_argument("--format", default="coo16", type=cli.storage_format,
                   help=f"format of the exported SavedModel's weights: "
                        f"{', '.join(sparse_formats.FORMATS)} or shared-Nbit, N in 1..8 "
                        f"(default %(default)s)")
    p.add_argument("--codebook-bits", type=cli.bits, help="bits of the shared-weight codebooks "
                   "that trained quantization fine-tunes (default 5)")
    p.add_argument("--codebook-epochs", type=cli.at_least(0),
                   help="epochs of trained quantization; 0: k-means codebooks only (default 3)")
    p.add_argument("--codebook-lr", type=cli.positive, help="learning rate of trained "
                   f"quantization (default {configs.SparseConfig.codebook_learning_rate:g})")
    p.add_argument("--calibration-images", type=cli.positive_int, help="training images that "
                   "calibrate the int8 .tflite (default "
                   f"{configs.SparseConfig.calibration_images})")
    cli.allow_other_data_flag(p)
    cli.folder_flag(p, "--pruned-dir", "stage-2 checkpoint folder",
                    configs.PrunedConfig.model_dir)
    cli.folder_flag(p, "--model-dir", "output folder", configs.SparseConfig.model_dir)
    args = p.parse_args()
    quick = configs.QUICK if args.quick else {}
    config = configs.sparse_config(args.network)
    config = configs.override(
        config, seed=args.seed, codebook_bits=args.codebook_bits,
        codebook_learning_rate=args.codebook_lr, calibration_images=args.calibration_images,
        codebook_epochs=quick.get("epochs") if args.codebook_epochs is None else
        args.codebook_epochs, model_dir=str(args.model_dir or configs.repo_path(config.model_dir)))
    pruned_dir = args.pruned_dir or configs.repo_path(configs.pruned_config(args.network).model_dir)
    formats = list(dict.fromkeys(sparse_formats.FORMATS + [args.format]))
    keras.utils.set_random_seed(config.seed)

    with stage_output(config.model_dir, "deploy_pruned_model.py",
                      inputs={"--pruned-dir": pruned_dir}) as out:
        model, _, pruned_config = load_pruned(pruned_dir, args.network)
        data = cli.load_data(args)
        pruned_config = check_data(data, pruned_config, pruned_dir, args.allow_other_data)
        x_test, y_test = data["test"]
        dense_fn = logits_function(model)
        dense_acc, dense_loss = evaluate(dense_fn, x_test, y_test, config.batch_size)
        print(f"pruned model as a dense network: test accuracy {dense_acc:.4f}  "
              f"loss {dense_loss:.4f}")

        layers = sparse_layers(model)
        exact = SparseNetwork(layers)
        sparse_acc, sparse_loss = evaluate(exact, x_test, y_test, config.batch_size)
        dense_logits = predict(dense_fn, x_test)
        gap = float(np.max(np.abs(predict(exact, x_test) - dense_logits)))
        print(f"sparse network:                  test accuracy {sparse_acc:.4f}  "
              f"loss {sparse_loss:.4f}  (max |logit difference| {gap:.1e})")
        if gap > LOGITS_TOLERANCE:
            raise ValueError(f"the sparse network disagrees with the dense one (max |logit "
                             f"difference| {gap:.1e} > {LOGITS_TOLERANCE:.0e}): not saved")

        with tempfile.TemporaryDirectory() as tmp:  # the dense export: only for its size
            export_saved_model(model, tmp)
            dense_disk = directory_bytes(tmp)
        # Before trained quantization, which writes the shared weights into `model`.
        tflite_lines, tflite = export_tflite(model, out, data, config, dense_logits)
        dense_bytes = pruning_utils.dense_bytes(layers)
        shared, quantization_lines, quantization = {}, [], None
        if config.codebook_epochs:
            shared[config.codebook_bits], quantization_lines, quantization = quantize(
                model, layers, config.codebook_bits, config.codebook_epochs, data, config)
        results, decoded = evaluate_formats(layers, formats, out, x_test, y_test,
                                            config.batch_size, shared)
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
        lines += quantization_lines + tflite_lines
        lines.append(f"deployed: {args.format}, SavedModel {saved_disk:,d} bytes on disk "
                     f"(dense SavedModel / sparse: {dense_disk / saved_disk:.2f}x)")
        (out / "compression_report.txt").write_text("\n".join(lines) + "\n")
        write_json(out / "config.json", {"config": config, "data": dict(
            source=data["source"], sha256=data["sha256"]), "results": dict(
            format=args.format, dense_test_accuracy=dense_acc, test_accuracy=sparse_acc,
            test_loss=sparse_loss, max_logit_difference=gap, dense_bytes=dense_bytes,
            compression=results["coo16"]["compression"], dense_saved_model_bytes=dense_disk,
            sparse_saved_model_bytes=saved_disk, formats=results,
            trained_quantization=quantization, tflite=tflite,
            nonzeros={l["name"]: len(l["values"]) for l in layers},
            weights={l["name"]: int(np.prod(l["shape"])) for l in layers})})
    print(*lines, sep="\n")
    print(f"saved {config.model_dir}/")


if __name__ == "__main__":
    cli.run(main)
