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

# --quick: smoke-test scale. One epoch on 2,000 images barely moves the weights out of their
# +-0.02 initial range, so the quick prune uses a lower threshold than 0.03 (which prunes all).
QUICK = dict(train_size=2000, val_size=500, test_size=1000, epochs=1, threshold=0.01)


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
    shift: int = 0                           # train on images moved by up to this many pixels
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
class Setting:
    """One setting of a stage (PRUNING, DEPLOYMENT), declared once: its default, its help, and
    its --flag as utils/flags.py builds it, records it and checks it.

    type     the flag's parser of one value, a name in utils/cli.py ("fraction", ...); None:
             one of `choices`, or no flag at all (`choices` None too: set by the stage itself)
    many     one or more values, a tuple
    flag     the flag, when it is not the field's name with hyphens
    used_by  (field, values): only read when `field` is one of `values`; setting it otherwise
             is an error naming both flags
    variational  what --schedule variational (which learns its own sparsity) refuses: "given",
             the flag given; "set", also the field changed from its default
    """
    default: object
    help: str
    type: str = None
    choices: tuple = None
    many: bool = False
    metavar: str = None
    flag: str = None
    used_by: tuple = None
    variational: str = None


# The PrunedConfig field each of the pruning package's criteria reads (pruning.criteria.VALUE_NAME;
# tests/training/test_recipes.py checks that the two agree). Here, so that the flags are checked
# without importing the package, which starts TensorFlow.
CRITERION_FIELD = {"threshold": "threshold", "std": "quality", "layer-sparsity": "sparsity",
                   "global-sparsity": "sparsity"}
SPARSITY_CRITERIA = tuple(c for c, field in CRITERION_FIELD.items() if field == "sparsity")
SCHEDULES = ("one-shot", "iterative", "gradual", "variational")  # training/recipes.py
# --structure (training/recipes.pruned_layers): "inputs" prunes whole input features of every
# weight layer (the pixels of fc1, the units of the layer before each other one: the layer sizes
# L0 regularisation reports); "units" whole output units and filters of every layer but the
# output one (whose units are the classes).
STRUCTURES = ("none", "inputs", "units")  # but "none": pruning.criteria.STRUCTURES
NORMS = ("l1", "l2")  # pruning.criteria.NORMS (tests/training/test_recipes.py ties them)
ALLOCATIONS = ("uniform", "sensitivity")
GROUPS = ("inputs", "units")

# Stage 2's settings beyond stage 1's, in --help's order: the mlp's defaults (a network's recipe,
# NETWORKS, changes some). Adding a pruning setting is one entry here.
PRUNING = {
    "criterion": Setting("threshold", "how to pick the weights to prune: |w| below --threshold, "
                         "below --quality x the layer's std, or the smallest --sparsity of each "
                         "layer or of all weights", choices=tuple(CRITERION_FIELD),
                         variational="given"),
    "threshold": Setting(0.03, "threshold: prune |w| below this; with --quick "
                         f"{QUICK['threshold']}",
                         "non_negative", used_by=("criterion", ("threshold",)),
                         variational="given"),
    "quality": Setting(1.0, "std: prune |w| < quality x layer std", "non_negative",
                       used_by=("criterion", ("std",)), variational="given"),
    "sparsity": Setting(0.95, "layer-/global-sparsity: fraction of weights to prune", "fraction",
                        used_by=("criterion", SPARSITY_CRITERIA), variational="given"),
    "block": Setting((1, 1), "prune in whole blocks of OUTPUTSxINPUTS weights: each layer keeps "
                     "as many weights as the criterion would, in its blocks of largest mean |w|. "
                     "1x4 (4 consecutive inputs of one unit) is the float32 layout TFLite's "
                     "sparse kernel runs, 1x16 the int8 one; 1x1: single weights", "block",
                     variational="set"),
    "structure": Setting("none", "prune whole groups, so that a smaller dense network remains "
                         "(the deploy stage exports it shrunk): 'inputs', whole input features "
                         "of every layer (pixels, and the units of the layer before); 'units', "
                         "whole units and conv filters of every layer but the output one; each "
                         "layer keeps about as many weights as the criterion would; with "
                         "--schedule variational, a noise per unit or per input feature: the "
                         "data choose which go", choices=STRUCTURES),
    "norm": Setting("l1", "--structure: score groups by their mean |w| (l1) or root mean square "
                    "(l2)", choices=NORMS, used_by=("structure", GROUPS), variational="given"),
    "group_lasso": Setting(0.0, "--structure: add a group-lasso penalty of this strength while "
                           "fine-tuning, driving whole groups toward zero (0: none)",
                           "non_negative", metavar="STRENGTH", used_by=("structure", GROUPS),
                           variational="given"),
    "allocation": Setting("uniform", "layer-sparsity: 'uniform', every layer at --sparsity; "
                          "'sensitivity', each layer's own sparsity from how much it alone loses "
                          "on the validation split, the total at --sparsity (Han et al. 2015)",
                          choices=ALLOCATIONS, used_by=("criterion", ("layer-sparsity",)),
                          variational="set"),
    "max_accuracy_drop": Setting(None, "search the sparsity instead of giving it: the sparsest "
                                 "network whose validation accuracy stays within this many "
                                 "points of the network it starts from (the dense one, or "
                                 "--structured-dir's; e.g. 0.5), by bisection over "
                                 "--search-steps runs of the schedule (layer-/global-sparsity; "
                                 "none: off)", "non_negative", metavar="POINTS",
                                 variational="set"),
    "search_steps": Setting(6, "--max-accuracy-drop: runs of the bisection, each a whole "
                            "fine-tuning", "positive_int"),
    "schedule": Setting("one-shot", "when to prune: once, in --rounds, gradually while "
                        "fine-tuning, or 'variational': sparse variational dropout (Adam), "
                        "which prunes what it learns to drop (log alpha > 3), with no criterion "
                        "or sparsity", choices=SCHEDULES),
    "kl_warmup_epochs": Setting(5, "variational: epochs over which the KL's weight rises to 1",
                                "positive_int", metavar="N",
                                used_by=("schedule", ("variational",))),
    "masked_epochs": Setting(0, "variational: then fine-tune the weights it kept this many "
                             "epochs more under their masks, without the noise, on the labels "
                             "alone (no --distill; Adam at the last --lr-values)",
                             "non_negative_int", metavar="N",
                             used_by=("schedule", ("variational",))),
    "rounds": Setting(3, "iterative: prune/fine-tune rounds, at most --epochs", "positive_int",
                      used_by=("schedule", ("iterative",))),
    "prune_every": Setting(100, "gradual: steps between mask updates", "positive_int",
                           used_by=("schedule", ("gradual",))),
    "initial_sparsity": Setting(0.0, "gradual: sparsity at the first mask update"),
    "ramp_fraction": Setting(0.5, "gradual: share of the fine-tuning steps spent ramping"),
    "shift": Setting(0, "train on training images moved at random by up to this many "
                     "pixels each way (a new move for every image, every epoch; the border "
                     "left black); 0: as they are", "non_negative_int", metavar="PIXELS"),
    "distill": Setting(0.0, "fine-tune toward a mixture of each training image's label and the "
                       "probabilities the network pruning starts from gives it, this much of "
                       "the latter (knowledge distillation at temperature 1); 0: the labels",
                       "share", metavar="WEIGHT"),
    "epochs": Setting(20, "fine-tuning epochs", "positive_int"),
    "lr_values": Setting((1e-3, 1e-4), "fine-tuning learning rates, one per step of the "
                         "schedule (variational, with Adam: 1e-3 1e-4)", "positive", many=True,
                         metavar="LR"),
    "lr_boundaries": Setting((10,), "epochs after which the learning rate steps to the next of "
                             "--lr-values", "positive_int", many=True, metavar="EPOCH"),
}


def pruned_class(settings):
    """Stage 2's config class: prune the stage-1 weights by magnitude, then fine-tune under the
    mask. Stage 1's config (the network, the data, the training recipe) with no dropout and a
    lighter weight decay, a field per setting of `settings` (PRUNING), and what the stage sets
    itself."""
    cls = dataclasses.make_dataclass("PrunedConfig", [
        ("dropout", float, 0.0), ("weight_decay", float, 1e-4),
        *((name, type(s.default), s.default) for name, s in settings.items()),
        ("shrunk_from", str, ""),      # the --structure checkpoint whose shrunk network this one
        #                                prunes further (--structured-dir); "": none
        ("upstream", dict, None),      # the record of the checkpoint it started from: set by the
        #                                loader (training/checkpoints.py)
        ("model_dir", str, "saved_models/network_dense_pruned")], bases=(DenseConfig,),
        frozen=True)
    cls.__module__ = __name__
    cls.__doc__ = "Stage 2: prune the stage-1 weights by magnitude, then fine-tune under the mask."
    return cls


PrunedConfig = pruned_class(PRUNING)
# The settings stage 1 shares with stage 2 (DenseConfig's fields, flags of both): train on moved
# images too, e.g. for a teacher that has seen them (experiments/papers.py DENSE).
TRAINING = {name: PRUNING[name] for name in ("shift",)}


# Stage 3's settings that are flags, in --help's order. Adding one is one entry here.
DEPLOYMENT = {
    "codebook_bits": Setting(5, "bits of the shared-weight codebooks that trained quantization "
                             "fine-tunes", "bits"),
    "codebook_epochs": Setting(3, "epochs of trained quantization (SGD, momentum 0.9); 0: k-means "
                               f"codebooks only; with --quick {QUICK['epochs']}",
                               "non_negative_int"),
    "codebook_learning_rate": Setting(1e-4, "learning rate of trained quantization", "positive",
                                      flag="--codebook-lr"),
    "bits_budget": Setting(0.002, "validation accuracy that shared-mixed-huffman's per-layer "
                           "code widths may lose (each layer the smallest width of 2..8 that "
                           "loses at most its share alone); trained quantization then fine-tunes "
                           "them as --codebook-bits'", "fraction"),
    "calibration_images": Setting(500, "training images that set the int8 .tflite's scales",
                                  "positive_int"),
}


def sparse_class(settings):
    """Stage 3's config class: deploy the pruned network with sparse weight matrices. A field per
    setting of `settings` (DEPLOYMENT), and what the stage sets itself."""
    cls = dataclasses.make_dataclass("SparseConfig", [
        ("network", str, "mlp"),       # of the pruned checkpoint
        ("data_source", str, ""),      # "MNIST" or the --dataset path: set from the data
        ("data_sha256", str, ""),      # of the data's four arrays: set from the data
        ("batch_size", int, 100),      # evaluation batch
        *((name, type(s.default), s.default) for name, s in settings.items()),
        ("logits_tolerance", float, 1e-4),  # most |logit difference| of a deployed network from
        #                                     the Keras model's (sums in other orders)
        ("seed", int, SEED),
        ("quick", bool, False),        # --quick: the MNIST subset of QUICK
        ("upstream", dict, None),      # the record of the pruned checkpoint it deploys
        ("model_dir", str, "saved_models/network_sparse")], frozen=True)
    cls.__module__ = __name__
    cls.__doc__ = "Stage 3: deploy the pruned network with sparse weight matrices."
    return cls


SparseConfig = sparse_class(DEPLOYMENT)


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


# --schedule variational (sparse variational dropout) trains with Adam, whose steps want smaller
# rates than SGD's: these, unless --lr-values is given (at the recipe's --lr-boundaries).
VARIATIONAL_LR_VALUES = (1e-3, 1e-4)

# sweep_pruning.py fine-tunes every point at these rates (halfway through its epochs): at the
# original's 1e-3, fine-tuning recovers far less at high sparsity.
SWEEP_LR_VALUES = (1e-2, 1e-3)


# --allocation sensitivity (pruning.layer_sensitivity): the sparsities each layer is measured at,
# alone, on the validation split; the total target can reach at most the last.
SENSITIVITY_LEVELS = (0.5, 0.7, 0.8, 0.9, 0.95, 0.97, 0.98, 0.99, 0.995)

# --max-accuracy-drop bisects the fraction of weights kept between 1 (all) and this, in log steps
# (training/recipes.search_sparsity): at most 1000x fewer weights.
SEARCH_FEWEST_KEPT = 1e-3
# ... in at most this many steps (--search-steps), each a whole fine-tuning: 20 pin the kept
# fraction to within a factor 10^(3 / 2^20) = 1.000007.
SEARCH_MOST_STEPS = 20


def criterion_value(config):
    """The value the config's criterion reads (its threshold, quality or sparsity)."""
    if config.criterion not in CRITERION_FIELD:
        raise ValueError(f"criterion must be one of {sorted(CRITERION_FIELD)}, got "
                         f"{config.criterion!r}")
    return getattr(config, CRITERION_FIELD[config.criterion])


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
    return override(SparseConfig(), network=network,
                    model_dir=_folder(network, SparseConfig.model_dir))


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


# The committed figures and results, every network's (pics/lenet-5/ ...) under them
COMMITTED = ("pics", "results", "benchmarks/results")


def committed_folder(path):
    """The folder of committed figures or results that `path` is or lies in, or None."""
    path = Path(path).resolve()
    return next((root for root in (repo_path(f).resolve() for f in COMMITTED)
                 if path == root or root in path.parents), None)


def learning_rate(config, epoch):
    """Learning rate for 0-based `epoch`: a piecewise-constant schedule over epochs."""
    passed = sum(epoch >= boundary for boundary in config.lr_boundaries)
    return config.lr_values[passed]
