"""What the scripts share on the command line: validated flags, default paths, clean failures.

Every flag is checked as it is parsed, before any data is loaded or any model trained: a bad value
is one line naming the flag, its allowed range and the value given. Default paths are the repo's
(`configs.repo_path`), so a script run from another folder finds the checkpoints the README's
commands made; a path given on the command line resolves against the current folder, as usual.
"""
import argparse
import math
import sys
from pathlib import Path

import configs
from utils.checkpoints import CheckpointError
from utils.mnist import MnistError, load_mnist

EXPECTED_ERRORS = (CheckpointError, MnistError, ValueError, OSError)


class Parser(argparse.ArgumentParser):
    """ArgumentParser whose errors are one line (`error: argument --epochs: ...`), no usage."""

    def __init__(self, description):
        super().__init__(description=description,
                         formatter_class=argparse.RawDescriptionHelpFormatter)

    def error(self, message):
        self.exit(2, f"error: {message} (see --help)\n")


def parser(description):
    """Parser with the flags every stage has: data dir, seed, quick mode."""
    p = Parser(description)
    p.add_argument("--data-dir", type=path, help="folder with MNIST (IDX files or mnist.npz); "
                   "default: $MNIST_DIR, data/mnist/, Keras' cache, else download")
    p.add_argument("--seed", type=seed, help="random seed (default 123)")
    p.add_argument("--quick", action="store_true",
                   help="smoke test: a small subset of MNIST and 1 epoch; never writes pics/")
    return p


# --- flag types: each returns the parsed value or raises ArgumentTypeError saying what is allowed
def _number(kind, text, ok, allowed):
    try:
        value = kind(text)
    except ValueError:
        value = None
    if value is None or not ok(value):
        raise argparse.ArgumentTypeError(f"must be {allowed}, got {text!r}")
    return value


def at_least(low):
    """Flag type: an integer >= `low`."""
    return lambda text: _number(int, text, lambda v: v >= low, f"an integer >= {low}")


positive_int = at_least(1)


def seed(text):
    return _number(int, text, lambda v: 0 <= v < 2 ** 32, "an integer in [0, 2^32)")


def fraction(text):
    """A sparsity: the fraction of weights pruned."""
    return _number(float, text, lambda v: 0 <= v < 1, "a number in [0, 1)")


def non_negative(text):
    return _number(float, text, lambda v: math.isfinite(v) and v >= 0, "a finite number >= 0")


def path(text):
    """A path from the command line, made absolute against the current folder."""
    if not text.strip():
        raise argparse.ArgumentTypeError(f"must be a path, got {text!r}")
    return Path(text).expanduser().resolve()


def storage_format(text):
    from utils import sparse_formats  # deferred: only the deploy stage has this flag
    try:
        sparse_formats.codec(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return text


def given(args, names):
    """The names among `names` whose flags were given on the command line (not left at None)."""
    return {name for name in names if getattr(args, name, None) is not None}


def publish_dir(args, flag, committed, quick_default=None):
    """Where a run publishes the figures or results that the README shows (the repo's
    `committed` folder by default).

    `--quick` runs never write them: without `flag` they go to `quick_default` (None: nowhere),
    and `flag` naming the committed folder is an error.
    """
    chosen = getattr(args, flag.lstrip("-").replace("-", "_"))
    committed = configs.repo_path(committed)
    if not args.quick:
        return chosen or committed
    if chosen == committed:
        raise ValueError(f"{flag} {chosen}: --quick never writes the committed figures and "
                         f"results of {committed}/; choose another folder or leave {flag} out")
    return chosen or quick_default


def run(main):
    """Call main(); an expected error becomes one 'error: ...' line and exit status 1."""
    try:
        main()
    except EXPECTED_ERRORS as e:
        sys.exit(f"error: {e}")
    except KeyboardInterrupt:
        sys.exit("interrupted: the previous output, if any, is left as it was")


def load_data(args):
    """MNIST splits for a stage: all of it, or the --quick subset."""
    quick = configs.QUICK
    if args.quick:
        return load_mnist(args.data_dir, quick["train_size"], quick["val_size"], quick["test_size"])
    return load_mnist(args.data_dir)
