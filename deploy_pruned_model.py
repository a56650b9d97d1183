"""Stage 3: deploy the pruned network with sparse weight matrices and report the compression.

    python deploy_pruned_model.py                       # coo16, the original's layout
    python deploy_pruned_model.py --format shared-5bit  # deploy the 5-bit weight-shared model
    python deploy_pruned_model.py --network lenet-5     # conv kernels as [kh*kw*cin, cout]
    python deploy_pruned_model.py --quick               # smoke test: MNIST subset

Needs the checkpoint of prune_network.py (of the same --network and data). A checkpoint pruned
with --structure is first shrunk (`pruning.shrink`: the removed pixels, units and filters gone, a
smaller dense network, saved as <model-dir>/shrunk.keras) and everything below is the shrunk
network's; one pruned with --structured-dir is already shrunk (and needs its --structure
checkpoint too, whose full-size network the compression is measured against). Trained quantization
first: the 5-bit shared-weight codebooks (--codebook-bits) are fine-tuned for --codebook-epochs,
codes fixed, and kept if they score better on the validation split; and so are those of
shared-mixed-huffman, each layer at its own width (2..8 bits), the smallest that loses at most its
share of --bits-budget validation accuracy. Every storage format
(compression/formats.py) is written to <model-dir>/weights.<format>.npz, read back, decoded into
the sparse network and evaluated; the one chosen with --format is exported as
<model-dir>/saved_model/ (`serving_default`: float32 [None, H*W] -> logits). The pruned float32
weights are also converted to LiteRT: <model-dir>/model.tflite (sparse weights, float32) and
model_int8.tflite (int8 weights, activations and input, calibrated on --calibration-images
training images: feed it int8 pixels, for MNIST its bytes minus 128), each read back to report how every weight is stored, and evaluated in LiteRT's
interpreter. Also writes compression_report.txt, config.json and stage.json.
<model-dir> must be new, empty or this script's earlier output; it is replaced only when the run
succeeds.
"""
import numpy as np

import configs
from compression import formats
from datasets import images
from utils import cli, flags
from utils.files import stage_output, write_json


def parse():
    """The flags, checked; the stage's config from them."""
    p = cli.parser(__doc__)
    p.add_argument("--format", default="coo16", type=cli.checked(formats.codec_name),
                   help=f"format of the exported SavedModel's weights: "
                        f"{', '.join(formats.FORMATS + [formats.MIXED])} or shared-Nbit, N "
                        f"in 1..8 "
                        f"(default %(default)s)")
    flags.add_flags(p, configs.DEPLOYMENT, configs.sparse_config())
    cli.allow_other_data_flag(p)
    cli.folder_flag(p, "--pruned-dir", "stage-2 checkpoint folder",
                    configs.PrunedConfig.model_dir)
    cli.folder_flag(p, "--model-dir", "output folder", configs.SparseConfig.model_dir)
    args = p.parse_args()
    changes = flags.changes(args, configs.DEPLOYMENT)
    if args.quick:
        changes.setdefault("codebook_epochs", configs.QUICK["epochs"])
    config = cli.stage_config(args, configs.sparse_config(args.network), **changes)
    return args, config


def main():
    args, config = parse()
    pruned_dir = args.pruned_dir or configs.repo_path(configs.pruned_config(args.network).model_dir)
    import keras  # TensorFlow starts here, once the flags are checked (utils/cli.py)

    from networks.builders import layer_sizes
    from pruning import shrink
    from training.checkpoints import check_data, load_pruned, record, shrunk_source
    keras.utils.set_random_seed(config.seed)

    with stage_output(config.model_dir, "deploy_pruned_model.py",
                      inputs={"--pruned-dir": pruned_dir}) as out:
        model, _, pruned_config, upstream = load_pruned(pruned_dir, args.network)
        data = images.from_flags(args)
        check_data(data, pruned_config, pruned_dir, args.allow_other_data)
        config = configs.override(config, upstream=upstream, data_source=data["source"],
                                  data_sha256=data["sha256"])
        # `full`: the network at its unpruned size, which the compression is measured against;
        # deployed: the smaller network, if pruned in whole groups
        full = shrunk_source(pruned_config, model) if pruned_config.shrunk_from else model
        deployed = shrink(full) if pruned_config.structure != "none" else model
        if pruned_config.structure != "none":
            deployed.save(out / "shrunk.keras")
        sizes = None if deployed is full else dict(pruned=layer_sizes(full),
                                                   shrunk=layer_sizes(deployed))
        if sizes:
            how = (f"{pruned_config.structure} pruned" if pruned_config.structure != "none" else
                   f"from {pruned_config.shrunk_from}/, then pruned inside")
            print(f"shrunk ({how}): {sizes['pruned']} -> {sizes['shrunk']}, "
                  f"{deployed.count_params():,d} parameters")
        results, lines = deploy(model, full, deployed, sizes, config, data, args.format, out)
        (out / "compression_report.txt").write_text("\n".join(lines) + "\n")
        results.update(shrunk_sizes=sizes, shrunk_parameters=sizes and deployed.count_params())
        write_json(out / "config.json", record(config, pruned=upstream["record"]["config"],
                                               data=dict(source=data["source"],
                                                         sha256=data["sha256"]),
                                               results=results))
    print(*lines, sep="\n")
    print(f"saved {config.model_dir}/")


def deploy(model, full, deployed, sizes, config, data, chosen, out):
    """Everything the stage writes into `out` for the pruned `model` (`deployed`: it, or its
    shrunk network, of layer `sizes`; `full`: the network at its unpruned size, the compression's
    baseline): the sparse network checked against the Keras logits, the .tflite files, trained
    quantization, every storage format read back and scored, the SavedModel in format `chosen`;
    (results for config.json, the report's lines)."""
    from compression import coo
    from deploy import codebooks, litert
    from deploy.report import report
    from deploy.saved_model import directory_bytes, saved_model_bytes
    from deploy.sparse_graph import SparseNetwork, check_sparse, sparse_layers
    from deploy.storage import write_formats
    from training.evaluate import evaluate, logits_function, predict
    x_test, y_test = data["test"]
    dense_fn = logits_function(model)
    dense_acc, dense_loss = evaluate(dense_fn, x_test, y_test, config.batch_size)
    print(f"pruned model as a dense network: test accuracy {dense_acc:.4f}  loss {dense_loss:.4f}")
    dense_logits = predict(dense_fn, x_test)
    unpruned = sparse_layers(full)
    dense_bytes, dense_disk = coo.dense_bytes(unpruned), saved_model_bytes(full)
    layers = sparse_layers(deployed)
    sparse_acc, sparse_loss, gap = check_sparse(layers, x_test, y_test, dense_logits,
                                                config.batch_size, config.logits_tolerance)
    print(f"sparse network:                  test accuracy {sparse_acc:.4f}  "
          f"loss {sparse_loss:.4f}  (max |logit difference| {gap:.1e})")
    tflite = litert.export(deployed, out, x_test, y_test,
                           data["train"][0][:config.calibration_images], dense_logits,
                           config.logits_tolerance, dense_model=full)
    shared, quantization = {}, None
    if config.codebook_epochs:
        shared[config.codebook_bits], quantization = codebooks.quantize(
            deployed, layers, config.codebook_bits, config.codebook_epochs, data,
            config.codebook_learning_rate, config.seed)
    widths, mixed = codebooks.choose_bits(deployed, layers, data["validation"],
                                          config.bits_budget)
    if config.codebook_epochs:
        shared["mixed"], mixed["trained_quantization"] = codebooks.quantize(
            deployed, layers, widths, config.codebook_epochs, data,
            config.codebook_learning_rate, config.seed)
    else:
        shared["mixed"] = codebooks.share_weights(layers, widths)
    mixed.update(bits=dict(zip([l["name"] for l in layers], widths)), budget=config.bits_budget)
    stored, decoded = write_formats(
        layers, dict.fromkeys(formats.FORMATS + [formats.MIXED, chosen]), out, data,
        config.batch_size, shared)
    check_sparse(decoded["coo16"], x_test, y_test, dense_logits, config.batch_size,
                 config.logits_tolerance)  # stored without its dead units: still exact
    for r in stored.values():
        r["compression"] = dense_bytes / r["bytes"]
    SparseNetwork(decoded[chosen]).save(out / "saved_model")
    saved_disk = directory_bytes(out / "saved_model")
    lines = report(layers, dense_bytes, dense_disk, stored, quantization, mixed, tflite, chosen,
                   saved_disk, sizes)
    return dict(
        format=chosen, dense_test_accuracy=dense_acc, test_accuracy=sparse_acc,
        test_loss=sparse_loss, max_logit_difference=gap, dense_bytes=dense_bytes,
        compression=stored["coo16"]["compression"], dense_saved_model_bytes=dense_disk,
        sparse_saved_model_bytes=saved_disk, formats=stored, trained_quantization=quantization,
        mixed_bits=mixed,
        tflite=tflite, nonzeros={l["name"]: len(l["values"]) for l in layers},
        weights={l["name"]: int(np.prod(l["shape"])) for l in layers},
        unpruned_weights=sum(int(np.prod(l["shape"])) for l in unpruned)), lines


if __name__ == "__main__":
    cli.run(main)
