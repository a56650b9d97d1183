"""The sweep's points (sweep_pruning.py): one pruning recipe run from the stage-1 checkpoint and
scored as pruned and as stored, the point to report chosen on validation, and each layer's
sensitivity to pruning alone."""
import time

import keras

import configs
from compression import coo, formats
from deploy.dead_units import drop_dead_units
from deploy.sparse_graph import sparse_layers
from deploy.storage import stored_accuracy
from experiments import papers
from networks.builders import weight_layers
import pruning
from pruning import criteria
from training.checkpoints import load_for_fine_tuning
from training.evaluate import evaluate, logits_function
from training.recipes import prune_and_fine_tune


def shared_accuracy(stored, data, batch_size):
    """(bytes, validation and test accuracy) of the pruned layers `stored` (without their dead
    units, as the deploy stage stores them) as configs.BEST_FORMAT (k-means codebooks)."""
    encoded = formats.encode(stored, configs.BEST_FORMAT)
    accuracy = stored_accuracy(formats.decode(encoded, configs.BEST_FORMAT,
                                              [l["name"] for l in stored],
                                              [l["spec"] for l in stored]), data, batch_size)
    return formats.nbytes(encoded), accuracy["validation"], accuracy["test"]


def run_point(network, seed, dense_dir, data, **changes):
    """Prune the stage-1 network in `dense_dir` with `network`'s PrunedConfig changed by
    `changes`, fine-tune it, score it as pruned and as stored; one row of the sweep."""
    config = configs.override(configs.pruned_config(network), seed=seed, **changes)
    keras.utils.set_random_seed(config.seed)
    model, optimizer, config = load_for_fine_tuning(dense_dir, config)
    start = time.perf_counter()
    masks, _ = prune_and_fine_tune(model, optimizer, config, data, log=lambda *_: None)
    seconds = time.perf_counter() - start
    layers = sparse_layers(model)
    logits_fn = logits_function(model)
    val_accuracy, accuracy = (evaluate(logits_fn, *data[s])[0] for s in ("validation", "test"))
    nonzero = sum(int(m.sum()) for m in masks.values())
    dense_bytes = coo.dense_bytes(layers)
    stored = drop_dead_units(layers)
    coo16 = formats.nbytes(formats.encode(stored, "coo16"))
    shared_bytes, shared_val, shared_test = shared_accuracy(stored, data, config.batch_size)
    row = dict(schedule=config.schedule, criterion=config.criterion,
               target=configs.criterion_value(config),
               sparsity=criteria.sparsity(list(masks.values())), nonzeros=nonzero,
               param_reduction=sum(m.size for m in masks.values()) / nonzero,
               compression=dense_bytes / coo16, val_accuracy=val_accuracy, test_accuracy=accuracy,
               shared_compression=dense_bytes / shared_bytes, shared_val_accuracy=shared_val,
               shared_test_accuracy=shared_test, epochs=config.epochs, seconds=seconds)
    print(f"{row['schedule']:10s} target {row['target']:<6} sparsity {row['sparsity']:.2%}  "
          f"{row['compression']:6.2f}x  val {val_accuracy:.4f} test {accuracy:.4f}  "
          f"{configs.BEST_FORMAT} {row['shared_compression']:6.2f}x val {shared_val:.4f} test "
          f"{shared_test:.4f}  ({seconds:.0f} s)")
    return row


def choose_point(rows, network):
    """The row to report for a LeNet, chosen on validation: the most compressed one (in
    configs.BEST_FORMAT) whose validation error, so stored, meets the target error; None if none
    does (and for the MLP, which has no published result to meet)."""
    if network not in papers.TARGET:
        return None
    error = papers.TARGET[network][0]
    fits = [r for r in rows if 100 * (1 - r["shared_val_accuracy"]) <= error]
    return max(fits, key=lambda r: r["shared_compression"], default=None)


def layer_sensitivity(model, data, levels):
    """Test accuracy with one layer at a time pruned to each sparsity level, no fine-tuning
    (`pruning.layer_sensitivity`, scored on the test split, as the sweep's plot shows it): rows
    of layer, sparsity, test_accuracy."""
    logits_fn = logits_function(model)
    curves = pruning.layer_sensitivity(model, lambda m: evaluate(logits_fn, *data["test"])[0],
                                       levels, [l.name for l in weight_layers(model)])
    return [dict(layer=key.removesuffix("/kernel"), sparsity=level, test_accuracy=accuracy)
            for key, curve in curves.items() for level, accuracy in curve[1:]]