"""The stages' checkpoints: a dense network loaded for fine-tuning, a pruned one for deployment,
each checked against its network, architecture, masks and the data it was trained on.

A stage's config.json is its record: the complete config it ran with (every flag after defaults,
the seed, --quick, the data's fingerprint), the software, its results, and in the config's
`upstream` the record of the checkpoint it started from, copied byte for byte as read, with the
SHA-256 of that file: `sha256sum <folder>/config.json` names the run it came from, and no later
stage rebuilds an earlier one's configuration from defaults.
"""
import hashlib
import json
import platform
import sys
from pathlib import Path

import keras
import numpy as np

import configs
from networks.builders import architecture, build_network, layer_sizes, weight_layers
from networks.layers import ByteDropout
from pruning import GroupLasso, PruningMask, SelectFeatures, get_masks, shrink
from utils.errors import CheckpointError
from utils.files import STAGE_FILE, write_json
from utils.records import read_artifact, read_record

# What the stages' model.keras files hold.
CUSTOM_OBJECTS = (ByteDropout, GroupLasso, PruningMask, SelectFeatures)


def save_checkpoint(out, model, optimizer, config, results=None):
    """Write model (masks included) + optimizer state, the config and results into `out` (the
    temporary folder of `stage_output`)."""
    out = Path(out)
    model.compile(optimizer=optimizer)  # so model.keras carries the optimizer's momentum
    model.save(out / "model.keras")
    write_json(out / "config.json", record(config, results))


def record(config, results=None, **more):
    """A stage's config.json: `config` as it ran, the software that ran it, `more` (named
    parts) and `results`."""
    import pruning
    versions = dict(python=platform.python_version(), numpy=np.__version__,
                    keras=keras.__version__, backend=keras.backend.backend(),
                    pruning=pruning.__version__)
    if "tensorflow" in sys.modules:
        versions["tensorflow"] = sys.modules["tensorflow"].__version__
    return {"config": config, "software": versions, **more, "results": results or {}}


def upstream_of(model_dir, made_by):
    """The record (config.json) of the checkpoint in `model_dir` as `upstream` holds it: the
    stage that wrote it, the folder, the SHA-256 of the file's bytes and its content."""
    raw, content = read_record(model_dir, made_by)
    return dict(stage=made_by, folder=str(Path(model_dir).resolve()),
                sha256=hashlib.sha256(raw).hexdigest(), record=content)


def load_checkpoint(model_dir, made_by, custom_objects=()):
    """(model with its optimizer, its record: `upstream_of`'s dict) from a checkpoint folder;
    `custom_objects` are the classes of the model's own layers and constraints (registered Keras
    serializables).

    `made_by` is the script that writes the checkpoint this caller needs: a missing checkpoint,
    one of another stage and a damaged file are each one CheckpointError saying what to run.
    """
    model_dir = Path(model_dir)
    if not any((model_dir / name).exists() for name in (STAGE_FILE, "model.keras")):
        raise CheckpointError(f"no checkpoint in {model_dir}/: run {made_by} first")
    stage = read_artifact(model_dir / STAGE_FILE, lambda p: json.loads(p.read_text())["stage"],
                          made_by)
    if stage != made_by:
        raise CheckpointError(f"{model_dir}/ holds a checkpoint of {stage}, not the one of "
                              f"{made_by} needed here: run {made_by} first or pass its folder")
    upstream = upstream_of(model_dir, made_by)
    objects = {keras.saving.get_registered_name(c): c for c in custom_objects}
    model = read_artifact(model_dir / "model.keras",
                          lambda p: keras.models.load_model(p, custom_objects=objects), made_by)
    return model, upstream


def check_data(data, config, source, allow_other=False):
    """Raise CheckpointError unless the data are those `config` (read from checkpoint `source`)
    was trained on; return `config` recording this run's data.

    Other images or classes are always refused: a network cannot take other input or output
    sizes. Other data of the same sizes (another fingerprint) is refused unless `allow_other`
    (--allow-other-data): a model trained on other images scores near chance, with no error.
    """
    have = (tuple(data["image_shape"]), data["num_classes"])
    if have != (tuple(config.image_shape), config.num_classes):
        raise CheckpointError(
            f"{source}/ was trained on {'x'.join(map(str, config.image_shape))} images with "
            f"{config.num_classes} classes; this data has {'x'.join(map(str, have[0]))} images "
            f"with {have[1]} classes: pass the same --dataset (or none) as its training run")
    if not config.data_sha256:
        print(f"warning: {source}/ records no data fingerprint (an older checkpoint): cannot "
              f"check that it was trained on this data", file=sys.stderr)
    elif config.data_sha256 != data["sha256"] and not allow_other:
        raise CheckpointError(
            f"{source}/ was trained on other data ({config.data_source}, sha256 "
            f"{config.data_sha256[:12]}) than this run's ({data['source']}, sha256 "
            f"{data['sha256'][:12]}): pass the same --dataset (or none) as its training run, or "
            f"--allow-other-data if that is meant")
    return with_data(config, data)


def with_data(config, data):
    """`config` recording the sizes and fingerprint of `data`."""
    return configs.override(config, image_shape=data["image_shape"],
                            num_classes=data["num_classes"], data_source=data["source"],
                            data_sha256=data["sha256"])


def with_saved_data(config, saved):
    """`config` with the image shape, classes and data fingerprint of checkpoint config `saved`."""
    return configs.override(config, image_shape=saved.image_shape, num_classes=saved.num_classes,
                            data_source=saved.data_source, data_sha256=saved.data_sha256)


def load_for_fine_tuning(dense_dir, config):
    """The stage-1 checkpoint's weights and SGD momentum, in a network built from `config`
    (the pruning stage's: no dropout, its own weight decay); (model, optimizer, config), the
    config's image shape and classes set to the checkpoint's.

    A checkpoint of another network or architecture is refused with one line naming both.
    """
    trained, upstream = load_checkpoint(dense_dir, "train_network_dense.py", CUSTOM_OBJECTS)
    saved = checkpoint_config(upstream["record"], config.network, dense_dir)
    config = configs.override(with_saved_data(config, saved), upstream=upstream)
    model = build_network(config)
    if [w.shape for w in trained.get_weights()] != [w.shape for w in model.get_weights()]:
        raise CheckpointError(f"{dense_dir}/ holds a {architecture(trained)} network; this stage "
                              f"builds {architecture(model)} "
                              f"(hidden_sizes, conv_filters in configs.py): retrain "
                              f"with train_network_dense.py or change configs.py")
    model.set_weights(trained.get_weights())
    return model, _sgd(model, config, getattr(trained, "optimizer", None), dense_dir), config


def _sgd(model, config, saved_optimizer, source):
    """The fine-tuning's SGD for `model`, built, starting from `saved_optimizer`'s momentum
    where that has the same shapes (None: saved uncompiled)."""
    optimizer = keras.optimizers.SGD(configs.learning_rate(config, 0), momentum=config.momentum)
    optimizer.build(model.trainable_variables)
    theirs = getattr(saved_optimizer, "momentums", None) or []
    if [v.shape for v in theirs] == [v.shape for v in optimizer.momentums]:
        for mine, saved_momentum in zip(optimizer.momentums, theirs):
            mine.assign(saved_momentum)
    else:  # saved with another optimizer (Adam, ...), with none, or for the unshrunk network
        kind = type(saved_optimizer).__name__ if saved_optimizer else "no optimizer"
        print(f"note: {source}/model.keras holds no SGD momentum of this network's shapes (saved "
              f"with {kind}): fine-tuning starts from fresh momentum", file=sys.stderr)
    return optimizer


def load_shrunk_for_fine_tuning(structured_dir, config):
    """The shrunk network of a --structure checkpoint of the pruning stage, to be pruned further
    (--structured-dir): (model, optimizer, config), the config recording its data and
    `shrunk_from`. Its kernels get `config`'s weight decay alone (a group lasso of the structured
    run does not follow it into unstructured pruning); its momentum starts afresh (the saved one
    has the unshrunk shapes).

    Refused with one line: a checkpoint of another stage or network, or one not pruned in whole
    groups (nothing to shrink: pass it as --dense-dir's dense network instead).
    """
    structured, _, saved, upstream = load_pruned(structured_dir, config.network)
    if saved.structure == "none":
        raise CheckpointError(f"{structured_dir}/ was not pruned with --structure (it has no "
                              f"whole groups to shrink): pass a prune_network.py --structure "
                              f"inputs|units checkpoint")
    if saved.shrunk_from:
        raise CheckpointError(f"{structured_dir}/ was itself pruned inside a shrunk network: "
                              f"pass its --structure checkpoint, {saved.shrunk_from}/")
    model = shrink(structured)
    for layer in weight_layers(model):
        layer.kernel_regularizer = (keras.regularizers.L2(config.weight_decay)
                                    if config.weight_decay else None)
        layer.kernel.regularizer = layer.kernel_regularizer
    config = configs.override(with_saved_data(config, saved), upstream=upstream,
                              shrunk_from=str(Path(structured_dir).resolve()))
    return model, _sgd(model, config, getattr(structured, "optimizer", None),
                       structured_dir), config


def shrunk_source(config, model):
    """The full-size pruned network of the --structure checkpoint that `model` (of a checkpoint
    pruned with --structured-dir, `config` its config) was shrunk from: what its compression is
    measured against. Refused with one line if that checkpoint is gone or no longer shrinks to
    `model`'s sizes (rerun in between)."""
    source = config.shrunk_from
    full, _, _, _ = load_pruned(source, config.network)
    if layer_sizes(shrink(full)) != layer_sizes(model):
        raise CheckpointError(f"{source}/ no longer shrinks to this checkpoint's "
                              f"{layer_sizes(model)} network (it was rerun since): rerun "
                              f"prune_network.py --structured-dir {source}")
    return full


def checkpoint_config(meta, network, model_dir):
    """The config a checkpoint (its config.json, `meta`) was made with, exactly as recorded (a
    field an older record lacks: the network's recipe), checked to be of `network` (the
    --network flag): another network's checkpoint is one clear line."""
    saved = meta.get("config", {})
    if saved.get("network", "mlp") != network:
        raise CheckpointError(f"{model_dir}/ holds a {saved.get('network', 'mlp')} network, not "
                              f"{network}: pass --network {saved.get('network', 'mlp')}, or the "
                              f"folder of a {network} run")
    return configs.from_record(configs.pruned_config(network), saved)


def pruned_layers(model, config):
    """The weight layers `config` prunes: all, but the output layer not for --structure units."""
    layers = weight_layers(model)
    return [l.name for l in (layers[:-1] if config.structure == "units" else layers)]


def load_pruned(pruned_dir, network="mlp"):
    """The stage-2 checkpoint of `network`: (model, {layer name: bool mask}, its config, its
    record as `upstream_of` gives it), its masks checked.

    Refused with one line: a checkpoint of another stage (a dense one was never pruned) or
    network, a model whose conv and Dense layers are not all pruned, or a kernel with non-zeros
    where its mask prunes.
    """
    model, upstream = load_checkpoint(pruned_dir, "prune_network.py", CUSTOM_OBJECTS)
    config = checkpoint_config(upstream["record"], network, pruned_dir)
    masks = {key.removesuffix("/kernel"): mask for key, mask in get_masks(model).items()}
    if sorted(masks) != sorted(pruned_layers(model, config)):
        raise CheckpointError(f"{pruned_dir}/model.keras has pruning masks on {sorted(masks)}, "
                              f"not on every weight layer its --structure prunes: rerun "
                              f"prune_network.py")
    for l in weight_layers(model):
        if l.name not in masks:
            continue
        if np.any(l.kernel.numpy()[~masks[l.name]]):
            raise CheckpointError(f"{pruned_dir}/model.keras has non-zero weights where its "
                                  f"masks prune them ({l.name}): rerun prune_network.py")
    return model, masks, config, upstream
