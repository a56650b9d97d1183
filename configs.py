"""The experiment: one frozen config per stage, with the original repo's values, and the recipes
of the papers' networks as changes to them.

Scripts override fields by name (`--epochs 3` sets `epochs`); an unknown name is an error, so a
typo never silently runs the default. The resolved config is written as JSON next to every artifact.
"""
import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent  # default paths (model_dir, pics, ...) are relative to it
SEED = 123  # seeds TensorFlow, NumPy and Python in every script


@dataclass(frozen=True)
class DenseConfig:
    """Stage 1: train the dense classifier (by default the original's 784-512-512-10 MLP)."""
    network: str = "mlp"                     # one of NETWORKS: which builder and recipe
    image_shape: tuple = (28, 28)            # H x W of the (grey) images: set from the data
    num_classes: int = 10                    # set from the data
    data_source: str = ""                    # "MNIST" or the --dataset path: set from the data
    data_sha256: str = ""                    # of the data's four arrays: set from the data
    conv_filters: tuple = ()                 # 5x5 valid convs, each then 2x2 max-pooling (lenet-5)
    hidden_sizes: tuple = (512, 512)         # units of each hidden ReLU layer
    dropout: float = 0.5                     # drop probability after each hidden layer
    weight_decay: float = 5e-4               # L2: decay x sum of squared kernel entries (no biases)
    momentum: float = 0.9                    # SGD momentum
    batch_size: int = 100
    epochs: int = 25
    lr_boundaries: tuple = (10, 20)          # epochs after which the learning rate steps down
    lr_values: tuple = (1e-2, 1e-3, 1e-4)    # learning rate before/between/after the boundaries
    init_stddev: float = 0.01                # truncated-normal stddev of the kernels; 0: Glorot
    init_bias: float = 0.1                   # constant initial bias
    seed: int = SEED
    quick: bool = False                      # --quick: the MNIST subset of QUICK, not all of it
    model_dir: str = "saved_models/network_dense"

    @property
    def input_size(self):
        """Pixels per image: every network takes flattened images, float32 [batch, H*W]."""
        return math.prod(self.image_shape)


@dataclass(frozen=True)
class PrunedConfig(DenseConfig):
    """Stage 2: prune the stage-1 weights by magnitude, then fine-tune under the mask."""
    dropout: float = 0.0
    weight_decay: float = 1e-4
    criterion: str = "threshold"             # threshold | std | layer-sparsity | global-sparsity
    threshold: float = 0.03                  # threshold: prune |w| < threshold
    quality: float = 1.0                     # std: prune |w| < quality x std of the layer
    sparsity: float = 0.95                   # layer-/global-sparsity: fraction of weights pruned
    block: tuple = (1, 1)                    # (outputs, inputs) pruned together; 1x4: TFLite's
    #                                          fast sparse layout (pruning/criteria.py)
    structure: str = "none"                  # none | inputs | units: prune whole groups, so
    #                                          that a smaller dense network remains (STRUCTURES)
    norm: str = "l1"                         # structure: a group's score, l1 or l2 norm
    group_lasso: float = 0.0                 # structure: group-lasso strength while fine-tuning
    allocation: str = "uniform"              # layer-sparsity: uniform (every layer at `sparsity`)
    #                                          or sensitivity (per layer, measured on the
    #                                          validation split, the total at `sparsity`)
    max_accuracy_drop: float = None          # given: search the sparsity (--max-accuracy-drop):
    #                                          the sparsest within this many points of the dense
    #                                          model's validation accuracy; None: `sparsity` as is
    search_steps: int = 6                    # --max-accuracy-drop: bisection probes, each a run
    shrunk_from: str = ""                    # the --structure checkpoint whose shrunk network
    #                                          this one prunes further (--structured-dir); "": none
    schedule: str = "one-shot"               # one-shot | iterative | gradual | variational
    #                                          (training/recipes.py)
    kl_warmup_epochs: int = 5                # variational: epochs over which the KL's weight rises
    #                                          (at most --epochs)
    rounds: int = 3                          # iterative: prune -> fine-tune rounds
    initial_sparsity: float = 0.0            # gradual: sparsity at the first mask update
    prune_every: int = 100                   # gradual: steps between mask updates
    ramp_fraction: float = 0.5               # gradual: share of the fine-tuning steps spent ramping
    epochs: int = 20
    lr_boundaries: tuple = (10,)
    lr_values: tuple = (1e-3, 1e-4)
    upstream: dict = None                    # the record of the checkpoint it started from: set
    #                                          by the loader (training/checkpoints.py)
    model_dir: str = "saved_models/network_dense_pruned"


@dataclass(frozen=True)
class SparseConfig:
    """Stage 3: deploy the pruned network with sparse weight matrices."""
    batch_size: int = 100                    # evaluation batch
    codebook_bits: int = 5                   # trained quantization: bits of the shared weights
    codebook_epochs: int = 3                 # trained quantization: epochs; 0 = k-means only
    codebook_learning_rate: float = 1e-4     # trained quantization: SGD (momentum 0.9) step
    calibration_images: int = 500            # int8 .tflite: training images that set its scales
    logits_tolerance: float = 1e-4           # most |logit difference| of a deployed network from
    #                                          the Keras model's (sums in other orders)
    seed: int = SEED
    quick: bool = False                      # --quick: the MNIST subset of QUICK
    upstream: dict = None                    # the record of the pruned checkpoint it deploys
    model_dir: str = "saved_models/network_sparse"


# The papers' networks (Han et al. 2015, Deep Compression 2016), as changes to the configs above:
# {network: {"architecture": ..., "dense": stage-1 recipe, "pruned": stage-2 recipe, "sweep": the
# sweep's default sparsities and schedules}}. "mlp" is the original repo's, unchanged. The LeNets
# follow Caffe's LeNet recipe, which the papers trained with (examples/mnist/lenet_solver.prototxt:
# SGD, momentum 0.9, weight decay 5e-4, learning rate 0.01, Xavier init, zero biases, no
# dropout), with a step schedule in place of Caffe's "inv" decay (LeNet-300-100, which Caffe has
# no solver for, starts at 0.05). The dense recipes reached the papers' baselines on the
# validation split as first tried; the fine-tuning's weight decay and the sparsities were chosen
# on the validation split (docs/papers.md). The MLP's sweep compares the three schedules; the
# LeNets', slower to fine-tune, their recipe's schedule over more sparsities. The papers' published
# results, our operating points and goals beside them: experiments/papers.py. A new network is
# one entry here (and one there, to compare it with papers).


BEST_FORMAT = "shared-5bit-huffman"  # pruning + weight sharing + Huffman, as Deep Compression
NETWORKS = {
    "mlp": dict(architecture={}, dense={}, pruned={},
                sweep=dict(sparsities=[0.8, 0.9, 0.95, 0.96, 0.97, 0.98, 0.99],
                           schedules=["one-shot", "iterative", "gradual"])),  # all SCHEDULES
    "lenet-300-100": dict(
        architecture=dict(hidden_sizes=(300, 100), dropout=0.0, init_stddev=0.0, init_bias=0.0),
        dense=dict(epochs=40, lr_boundaries=(20, 30), lr_values=(5e-2, 5e-3, 5e-4)),
        pruned=dict(criterion="global-sparsity", sparsity=0.92, schedule="gradual",
                    lr_values=(1e-2, 1e-3), weight_decay=0.0),
        sweep=dict(sparsities=[0.9, 0.92, 0.95, 0.96, 0.97, 0.98, 0.99], schedules=["gradual"])),
    "lenet-5": dict(
        architecture=dict(conv_filters=(20, 50), hidden_sizes=(500,), dropout=0.0,
                          init_stddev=0.0, init_bias=0.0),
        dense=dict(epochs=20, lr_boundaries=(12, 17), lr_values=(1e-2, 1e-3, 1e-4)),
        pruned=dict(criterion="global-sparsity", sparsity=0.92, schedule="gradual", epochs=10,
                    lr_boundaries=(5,), lr_values=(1e-2, 1e-3), weight_decay=0.0),
        sweep=dict(sparsities=[0.92, 0.95, 0.97, 0.98, 0.99], schedules=["gradual"])),
}


def _folder(network, stage_dir):
    """Default checkpoint folder: the MLP's as the original had them, the others by network."""
    return stage_dir if network == "mlp" else f"saved_models/{network}/{Path(stage_dir).name}"


def network_folder(folder, network):
    """Where a network's committed figures or results go: `folder` (pics/, results/) itself for
    the original MLP, else a subfolder named after the network."""
    return folder if network == "mlp" else f"{folder}/{network}"


SCHEDULES = ("one-shot", "iterative", "gradual", "variational")  # training/recipes.py
# --schedule variational (sparse variational dropout) trains with Adam, whose steps want smaller
# rates than SGD's: these, unless --lr-values is given (at the recipe's --lr-boundaries).
VARIATIONAL_LR_VALUES = (1e-3, 1e-4)
# what --schedule variational decides itself, so that a flag setting it is refused
VARIATIONAL_DECIDES = ("criterion", "threshold", "quality", "sparsity", "block", "structure",
                       "allocation", "max_accuracy_drop")
# --structure (training/recipes.pruned_layers): "inputs" prunes whole input features of every
# weight layer (the pixels of fc1, the units of the layer before each other one: the layer sizes
# L0 regularisation reports); "units" whole output units and filters of every layer but the
# output one (whose units are the classes).
STRUCTURES = ("none", "inputs", "units")  # but "none": pruning.criteria.STRUCTURES
NORMS = ("l1", "l2")  # pruning.criteria.NORMS (tests/training/test_recipes.py ties them)
# The PrunedConfig field each of the pruning package's criteria reads (pruning.criteria.VALUE_NAME;
# tests/training/test_recipes.py checks that the two agree). Here, so that the flags are checked
# without importing the package, which starts TensorFlow.
CRITERION_FIELD = {"threshold": "threshold", "std": "quality", "layer-sparsity": "sparsity",
                   "global-sparsity": "sparsity"}
# Which flags only one criterion or schedule reads: {config field: (the field choosing, its values)}
USED_ONLY_BY = {
    **{field: ("criterion", [c for c, f in CRITERION_FIELD.items() if f == field])
       for field in set(CRITERION_FIELD.values())},
    "rounds": ("schedule", ["iterative"]),
    "allocation": ("criterion", ["layer-sparsity"]),
    "norm": ("structure", ["inputs", "units"]),
    "group_lasso": ("structure", ["inputs", "units"]),
    "prune_every": ("schedule", ["gradual"]),
    "kl_warmup_epochs": ("schedule", ["variational"]),
}


# --allocation sensitivity (pruning.layer_sensitivity): the sparsities each layer is measured at,
# alone, on the validation split; the total target can reach at most the last.
ALLOCATIONS = ("uniform", "sensitivity")
SENSITIVITY_LEVELS = (0.5, 0.7, 0.8, 0.9, 0.95, 0.97, 0.98, 0.99, 0.995)

# --max-accuracy-drop bisects the fraction of weights kept between 1 (all) and this, in log steps
# (training/recipes.search_sparsity): at most 1000x fewer weights.
SEARCH_FEWEST_KEPT = 1e-3


def criterion_value(config):
    """The value the config's criterion reads (its threshold, quality or sparsity)."""
    if config.criterion not in CRITERION_FIELD:
        raise ValueError(f"criterion must be one of {sorted(CRITERION_FIELD)}, got "
                         f"{config.criterion!r}")
    return getattr(config, CRITERION_FIELD[config.criterion])


def check_pruned(config, given=()):
    """Raise ValueError, naming the flags, for settings of a PrunedConfig that cannot run
    together, or for a setting in `given` (the fields a user set) that the chosen criterion or
    schedule would ignore."""
    criterion_value(config)
    if config.schedule not in SCHEDULES:
        raise ValueError(f"schedule must be one of {SCHEDULES}, got {config.schedule!r}")
    if config.schedule == "variational":
        set_ = {"structure": config.structure != "none", "block": tuple(config.block) != (1, 1),
                "allocation": config.allocation != "uniform",
                "max_accuracy_drop": config.max_accuracy_drop is not None}
        decided = sorted({f for f in given if f in VARIATIONAL_DECIDES} |
                         {f for f, changed in set_.items() if changed})
        if decided:
            raise ValueError(f"--schedule variational learns which single weights to prune (log "
                             f"alpha > 3, no target): --{decided[0].replace('_', '-')} is not "
                             f"used by it")
        if "kl_warmup_epochs" in given and config.kl_warmup_epochs > config.epochs:
            raise ValueError(f"--kl-warmup-epochs must be in [1, --epochs {config.epochs}], got "
                             f"{config.kl_warmup_epochs}")
    for field in sorted(given):
        if field in USED_ONLY_BY:
            chooser, users = USED_ONLY_BY[field]
            if getattr(config, chooser) not in users:
                raise ValueError(
                    f"--{field.replace('_', '-')} is not used by --{chooser} "
                    f"{getattr(config, chooser)} (only by --{chooser} {' or '.join(users)})")
    if config.structure not in STRUCTURES:
        raise ValueError(f"structure must be one of {STRUCTURES}, got {config.structure!r}")
    if config.allocation not in ALLOCATIONS:
        raise ValueError(f"allocation must be one of {ALLOCATIONS}, got {config.allocation!r}")
    if config.allocation == "sensitivity" and config.criterion != "layer-sparsity":
        raise ValueError(f"--allocation sensitivity sets each layer's sparsity: it needs "
                         f"--criterion layer-sparsity, got {config.criterion}")
    if config.max_accuracy_drop is not None:
        if config.max_accuracy_drop < 0:
            raise ValueError(f"--max-accuracy-drop must be >= 0 points, got "
                             f"{config.max_accuracy_drop}")
        if CRITERION_FIELD[config.criterion] != "sparsity":
            raise ValueError(f"--max-accuracy-drop searches a sparsity: it needs --criterion "
                             f"layer-sparsity or global-sparsity, got {config.criterion}")
        if "sparsity" in given:
            raise ValueError("--max-accuracy-drop searches the sparsity that --sparsity would "
                             "set: give one")
    elif "search_steps" in given:
        raise ValueError("--search-steps is not used without --max-accuracy-drop")
    if config.shrunk_from and config.structure != "none":
        raise ValueError(f"--structured-dir prunes inside an already shrunk network, "
                         f"--structure {config.structure} would shrink it again: choose one (or "
                         f"prune the structured run harder)")
    if config.structure != "none" and tuple(config.block) != (1, 1):
        raise ValueError(f"--structure {config.structure} removes whole groups, --block "
                         f"{config.block[0]}x{config.block[1]} blocks: choose one")
    if config.schedule == "gradual" and CRITERION_FIELD[config.criterion] != "sparsity":
        raise ValueError(f"--schedule gradual ramps up a sparsity: it needs --criterion "
                         f"layer-sparsity or global-sparsity, got {config.criterion}")
    if list(config.lr_boundaries) != sorted(set(config.lr_boundaries)):
        raise ValueError(f"--lr-boundaries must rise, each epoch once, got "
                         f"{list(config.lr_boundaries)}")
    if len(config.lr_values) != len(config.lr_boundaries) + 1:
        raise ValueError(f"--lr-values needs {len(config.lr_boundaries) + 1} learning rates "
                         f"(the rate steps down after epochs {list(config.lr_boundaries)}), got "
                         f"{len(config.lr_values)}")
    if config.schedule == "iterative" and not 1 <= config.rounds <= config.epochs:
        raise ValueError(f"--rounds must be in [1, --epochs {config.epochs}] (each round "
                         f"fine-tunes at least one epoch), got {config.rounds}")


def check_network(network):
    if network not in NETWORKS:
        raise ValueError(f"network must be one of {list(NETWORKS)}, got {network!r}")


def dense_config(network="mlp"):
    """Stage 1's config for `network`: its architecture and training recipe."""
    check_network(network)
    recipe = NETWORKS[network]
    return override(DenseConfig(), network=network, **recipe["architecture"], **recipe["dense"],
                    model_dir=_folder(network, DenseConfig.model_dir))


def pruned_config(network="mlp"):
    """Stage 2's config for `network`: its architecture and pruning + fine-tuning recipe."""
    check_network(network)
    recipe = NETWORKS[network]
    return override(PrunedConfig(), network=network, **recipe["architecture"], **recipe["pruned"],
                    model_dir=_folder(network, PrunedConfig.model_dir))


def sparse_config(network="mlp"):
    check_network(network)
    return override(SparseConfig(), model_dir=_folder(network, SparseConfig.model_dir))


# --quick: smoke-test scale. One epoch on 2,000 images barely moves the weights out of their
# +-0.02 initial range, so the quick prune uses a lower threshold than 0.03 (which prunes all).
QUICK = dict(train_size=2000, val_size=500, test_size=1000, epochs=1, threshold=0.01)


def override(config, **changes):
    """Return `config` with the named fields replaced; `None` values are ignored.

    Raises ValueError naming the field when it does not exist, so a mistyped flag fails loudly.
    """
    changes = {k: v for k, v in changes.items() if v is not None}
    fields = {f.name for f in dataclasses.fields(config)}
    unknown = sorted(set(changes) - fields)
    if unknown:
        raise ValueError(f"unknown config field(s) {unknown} for {type(config).__name__}; "
                         f"valid: {sorted(fields)}")
    return dataclasses.replace(config, **changes)


def from_record(config, recorded):
    """`config` with every field that `recorded` (a config as a stage's config.json holds it)
    has, exactly as recorded (JSON's lists as tuples, but `upstream`); fields it lacks (a record
    of an older version) keep `config`'s values."""
    fields = {f.name for f in dataclasses.fields(config)}
    return dataclasses.replace(config, **{
        name: tuple(value) if isinstance(value, list) else value
        for name, value in recorded.items() if name in fields})


def repo_path(path):
    """A default path of this repo, absolute: scripts run from elsewhere find the same files."""
    return REPO / path


def learning_rate(config, epoch):
    """Learning rate for 0-based `epoch`: a piecewise-constant schedule over epochs."""
    passed = sum(epoch >= boundary for boundary in config.lr_boundaries)
    return config.lr_values[passed]
