"""A stage's flags, built from the one table of its settings (`configs.PRUNING`,
`configs.DEPLOYMENT`): the argparse flags, the config's changes from them, and the checks of
what cannot run together. A setting's name, default, type, help and which criterion or schedule
reads it are written once, there; the record (config.json) holds every field, and the pruning
stage's `describe` reads the config.

The checks run on the flags, before any data is loaded or TensorFlow started (utils/cli.py).
"""
import configs
from utils import cli


def flag(name, settings=None):
    """The --flag of setting `name`: the name with hyphens, unless `settings`[name] names
    another."""
    declared = settings and name in settings and settings[name].flag
    return declared or "--" + name.replace("_", "-")


def add_flags(parser, settings, recipe):
    """One flag per setting of `settings` (name: configs.Setting) that has a type or choices; its
    help ends with `recipe`'s value (the config of the --network default, mlp)."""
    for name, s in settings.items():
        if s.type is None and s.choices is None:
            continue
        default = getattr(recipe, name)
        shown = ("x".join(map(str, default)) if name == "block" else
                 " ".join(f"{v:g}" for v in default) if s.many else
                 "none" if default is None else f"{default:g}" if isinstance(default, float)
                 else default)
        option = flag(name, settings)
        metavar = s.metavar or (None if s.choices else option[2:].upper().replace("-", "_"))
        parser.add_argument(option, dest=name, type=s.type and getattr(cli, s.type),
                            choices=s.choices, nargs="+" if s.many else None, metavar=metavar,
                            help=f"{s.help} (default: the network's recipe, {shown} for mlp)")


def given(args, settings):
    """The settings whose flags were given on the command line (not left at None)."""
    return {name for name in settings if getattr(args, name, None) is not None}


def changes(args, settings):
    """{field: value} of the flags given, as the config holds them (several values: a tuple)."""
    return {name: tuple(getattr(args, name)) if settings[name].many else getattr(args, name)
            for name in given(args, settings)}


def check_pruned(config, given=()):
    """Raise ValueError, naming the flags, for settings of a PrunedConfig that cannot run
    together, or for a setting in `given` (the fields a user set) that the chosen criterion or
    schedule would ignore: the table's `used_by` and `variational`, then the rules between
    settings that no single entry states."""
    for name in ("criterion", "schedule", "structure", "allocation", "norm"):
        choices = configs.PRUNING[name].choices
        if getattr(config, name) not in choices:
            raise ValueError(f"{name} must be one of {choices}, got {getattr(config, name)!r}")
    if config.schedule == "variational":
        refused = sorted(name for name, s in configs.PRUNING.items() if s.variational and (
            name in given or s.variational == "set" and getattr(config, name) != s.default))
        if refused:
            raise ValueError(f"--schedule variational learns which weights or units to prune "
                             f"(log alpha > 3, no target): {flag(refused[0])} is not used by it")
    for name in sorted(given):
        used_by = configs.PRUNING[name].used_by if name in configs.PRUNING else None
        if used_by and getattr(config, used_by[0]) not in used_by[1]:
            chooser, users = used_by
            raise ValueError(f"{flag(name)} is not used by {flag(chooser)} "
                             f"{getattr(config, chooser)} (only by {flag(chooser)} "
                             f"{' or '.join(users)})")
    for rule in RULES:
        message = rule(config, given)
        if message:
            raise ValueError(message)


def _kl_warmup(config, given):
    if "kl_warmup_epochs" in given and config.kl_warmup_epochs > config.epochs:
        return (f"--kl-warmup-epochs must be in [1, --epochs {config.epochs}], got "
                f"{config.kl_warmup_epochs}")


def _sensitivity(config, given):
    if config.allocation != "sensitivity":
        return None
    if config.criterion != "layer-sparsity":
        return (f"--allocation sensitivity sets each layer's sparsity: it needs --criterion "
                f"layer-sparsity, got {config.criterion}")
    most = configs.SENSITIVITY_LEVELS[-1]
    if config.sparsity > most:  # known now, before every layer is measured
        return (f"--allocation sensitivity measures each layer up to sparsity {most}, so the "
                f"total can reach at most that: --sparsity must be <= {most}, got "
                f"{config.sparsity}")


def _search(config, given):
    if config.max_accuracy_drop is None:
        return ("--search-steps is not used without --max-accuracy-drop"
                if "search_steps" in given else None)
    if config.max_accuracy_drop < 0:
        return f"--max-accuracy-drop must be >= 0 points, got {config.max_accuracy_drop}"
    if config.criterion not in configs.SPARSITY_CRITERIA:
        return (f"--max-accuracy-drop searches a sparsity: it needs --criterion layer-sparsity "
                f"or global-sparsity, got {config.criterion}")
    if "sparsity" in given:
        return "--max-accuracy-drop searches the sparsity that --sparsity would set: give one"
    if config.search_steps > configs.SEARCH_MOST_STEPS:
        return (f"--search-steps must be at most {configs.SEARCH_MOST_STEPS}, got "
                f"{config.search_steps}: each step is a whole fine-tuning, and "
                f"{configs.SEARCH_MOST_STEPS} already pin the kept fraction of weights to within "
                f"0.001%")


def _groups(config, given):
    if config.shrunk_from and config.structure != "none":
        return (f"--structured-dir prunes inside an already shrunk network, --structure "
                f"{config.structure} would shrink it again: choose one (or prune the structured "
                f"run harder)")
    if config.structure != "none" and tuple(config.block) != (1, 1):
        return (f"--structure {config.structure} removes whole groups, --block "
                f"{config.block[0]}x{config.block[1]} blocks: choose one")


def _gradual(config, given):
    if config.schedule == "gradual" and config.criterion not in configs.SPARSITY_CRITERIA:
        return (f"--schedule gradual ramps up a sparsity: it needs --criterion layer-sparsity "
                f"or global-sparsity, got {config.criterion}")


def _learning_rates(config, given):
    if list(config.lr_boundaries) != sorted(set(config.lr_boundaries)):
        return f"--lr-boundaries must rise, each epoch once, got {list(config.lr_boundaries)}"
    if len(config.lr_values) != len(config.lr_boundaries) + 1:
        return (f"--lr-values needs {len(config.lr_boundaries) + 1} learning rates (the rate "
                f"steps down after epochs {list(config.lr_boundaries)}), got "
                f"{len(config.lr_values)}")


def _rounds(config, given):
    if config.schedule == "iterative" and not 1 <= config.rounds <= config.epochs:
        return (f"--rounds must be in [1, --epochs {config.epochs}] (each round fine-tunes at "
                f"least one epoch), got {config.rounds}")


# The rules between settings, in the order they are checked: each (config, given) -> the error,
# or None.
RULES = (_kl_warmup, _sensitivity, _search, _groups, _gradual,
         _learning_rates, _rounds)


def settings(argv, table=None):
    """{field: value} that the pruning stage's flags `argv` set (["--sparsity", "0.97"] ->
    {"sparsity": 0.97}), parsed as prune_network.py parses them: what a record of a run with
    them must hold (compare_with_papers.py). `table`: another stage's settings
    (configs.TRAINING: the dense stage's)."""
    table = table or configs.PRUNING
    parser = cli.Parser("the stage's settings")
    add_flags(parser, table, configs.PrunedConfig())
    return changes(parser.parse_args(argv), table)
