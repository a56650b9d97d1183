"""What the scripts share on the command line: validated flags, default paths, clean failures.

Every flag is checked as it is parsed, before any data is loaded or any model trained: a bad value
is one line naming the flag, its allowed range and the value given. Default paths are the repo's
(`configs.repo_path`), so a script run from another folder finds the checkpoints the README's
commands made; a path given on the command line resolves against the current folder, as usual.
"""
import _thread
import argparse
import math
import re
import signal
import sys
import threading
from pathlib import Path

import configs
from utils.errors import CheckpointError, DataError, MnistError

EXPECTED_ERRORS = (CheckpointError, DataError, MnistError, ValueError, OSError)


class Parser(argparse.ArgumentParser):
    """ArgumentParser whose errors are one line (`error: argument --epochs: ...`), no usage."""

    def __init__(self, description):
        super().__init__(description=description,
                         formatter_class=argparse.RawDescriptionHelpFormatter)

    def error(self, message):
        self.exit(2, f"error: {message} (see --help)\n")


def parser(description):
    """Parser with the flags every stage has: network, data, seed, quick mode."""
    p = Parser(description)
    p.add_argument("--network", choices=list(configs.NETWORKS), default="mlp",
                   help="which network and recipe (configs.py); the default paths follow it "
                        "(default %(default)s)")
    data_flags(p)
    p.add_argument("--seed", type=seed, help="random seed (default 123)")
    p.add_argument("--quick", action="store_true",
                   help="smoke test: a small subset of MNIST and 1 epoch; never writes pics/")
    return p


def data_flags(p):
    """--data-dir (where MNIST is) or --dataset (a user's own data), one of them."""
    data = p.add_mutually_exclusive_group()
    data.add_argument("--data-dir", type=path, help="folder with MNIST (IDX files or mnist.npz); "
                      "default: $MNIST_DIR, data/mnist/, Keras' cache, else download")
    data.add_argument("--dataset", type=path, help="your own data instead of MNIST (no checksum): "
                      "a .npz with x_train [N, H, W], y_train, x_test, y_test, or a folder of "
                      "four IDX files (train-images, train-labels, t10k-images, t10k-labels)")


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
non_negative_int = at_least(0)


def seed(text):
    return _number(int, text, lambda v: 0 <= v < 2 ** 32, "an integer in [0, 2^32)")


def fraction(text):
    """A sparsity: the fraction of weights pruned."""
    return _number(float, text, lambda v: 0 <= v < 1, "a number in [0, 1)")


def share(text):
    """A weight of a mixture: 0 (none) to 1 (all)."""
    return _number(float, text, lambda v: 0 <= v <= 1, "a number in [0, 1]")


def positive(text):
    return _number(float, text, lambda v: math.isfinite(v) and v > 0, "a finite number > 0")


def non_negative(text):
    return _number(float, text, lambda v: math.isfinite(v) and v >= 0, "a finite number >= 0")


def path(text):
    """A path from the command line, made absolute against the current folder."""
    if not text.strip():
        raise argparse.ArgumentTypeError(f"must be a path, got {text!r}")
    return Path(text).expanduser().resolve()


def bits(text):
    """A shared-weight code width."""
    return _number(int, text, lambda v: 1 <= v <= 8, "an integer in 1..8")


def block(text):
    """A pruning block, OUTPUTSxINPUTS -> (outputs, inputs), read as `pruning.criteria.parse_block`
    reads it (tests/utils/test_cli.py checks that the two agree) without importing the package,
    which starts TensorFlow."""
    match = re.fullmatch(r"(\d+)x(\d+)", text.strip())
    if not match or min(map(int, match.groups())) < 1:
        raise argparse.ArgumentTypeError(f"block must be OUTPUTSxINPUTS with positive integers, "
                                         f"like 1x4 or 1x16, got {text!r}")
    return tuple(int(n) for n in match.groups())


def checked(parse):
    """Flag type from `parse(text)`, a function that returns the value or raises ValueError
    saying what is allowed (`criteria.parse_block`, `formats.codec_name`)."""
    def flag_type(text):
        try:
            return parse(text)
        except ValueError as e:
            raise argparse.ArgumentTypeError(str(e)) from None
    return flag_type


def allow_other_data_flag(p):
    """Add --allow-other-data: the stages after training check the data's fingerprint."""
    p.add_argument("--allow-other-data", action="store_true",
                   help="use the checkpoint on data other than it was trained on (same image "
                        "size and classes); without it, other data is an error")


def folder_flag(p, flag, what, default):
    """Add a folder flag whose default follows --network: `default` (a configs model_dir) for
    mlp, saved_models/<network>/<the same name> for the others (configs._folder)."""
    p.add_argument(flag, type=path, help=f"{what} (default {default}, "
                   f"saved_models/<network>/{Path(default).name})")


def given(args, names):
    """The names among `names` whose flags were given on the command line (not left at None)."""
    return {name for name in names if getattr(args, name, None) is not None}


def publish_dir(args, flag, committed, quick_default=None, output=None):
    """Where a run publishes the figures or results that the README shows (the repo's
    `committed` folder by default).

    `--quick` runs never write them: without `flag` they go to `quick_default` (None: nowhere),
    and `flag` naming a committed folder (any network's: `configs.committed_folder`) is an
    error, as is one in the stage's `output` folder (--model-dir), which the stage replaces
    whole.
    """
    chosen = getattr(args, flag.lstrip("-").replace("-", "_"))
    committed = configs.repo_path(committed)
    output = output and Path(output).resolve()
    if chosen and output and (chosen == output or output in chosen.parents):
        raise ValueError(f"{flag} {chosen} lies in --model-dir {output}, which the stage "
                         f"replaces whole: choose a folder outside it")
    if not args.quick:
        return chosen or committed
    if chosen and configs.committed_folder(chosen):  # any network's, not only this one's
        raise ValueError(f"{flag} {chosen}: --quick never writes the committed figures and "
                         f"results (under {configs.committed_folder(chosen)}/); choose another "
                         f"folder or leave {flag} out")
    return chosen or quick_default


class Stopped(BaseException):
    """A signal that ends the run (SIGTERM, SIGHUP): raised like Ctrl-C's KeyboardInterrupt, so
    that every `with` block cleans up (working folders removed, locks released)."""


SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
_ending = []  # the signal that is ending the run, once one has


def _stop(signum, frame):
    """Raise the signal as an exception, once: a second Ctrl-C while the first one's clean-up
    runs would stop that clean-up half way and print a traceback."""
    if _ending:
        return
    _ending.append(signum)
    if signum == signal.SIGINT:
        raise KeyboardInterrupt
    raise Stopped(signal.Signals(signum).name)


def _raise_again(unraisable):
    """An interrupt raised inside a destructor or a generator's clean-up, which Python prints as
    "Exception ignored in ..." and drops, raised again where the run is (the next bytecode of
    the main thread), so that the run ends as it was told to."""
    if isinstance(unraisable.exc_value, (KeyboardInterrupt, Stopped)) and _ending:
        # Raised from a moment later, by a thread: a signal raised in this hook would be handled
        # in it, and an exception from the hook is dropped too.
        timer = threading.Timer(0.05, _thread.interrupt_main, (_ending.pop(),))
        timer.daemon = True  # a run that ends meanwhile does not wait for it
        timer.start()
    else:
        sys.__unraisablehook__(unraisable)


def run(main):
    """Call main(); an expected error becomes one 'error: ...' line and exit status 1.

    Ctrl-C, `kill` (SIGTERM) and a closed terminal (SIGHUP) each end the run with one line,
    having removed its working folder; exit status 130, 143, 129 as a shell reports them. The
    handlers and `sys.unraisablehook` are put back as they were when it returns.
    """
    handlers, hook = {s: signal.getsignal(s) for s in SIGNALS}, sys.unraisablehook
    _ending.clear()
    for signum in SIGNALS:
        signal.signal(signum, _stop)
    sys.unraisablehook = _raise_again
    try:
        _run(main)
    finally:
        for signum, handler in handlers.items():
            signal.signal(signum, handler)
        sys.unraisablehook = hook


def _run(main):
    """main(), its errors and interrupts each one line and an exit status."""
    try:
        main()
    except EXPECTED_ERRORS as e:
        sys.exit(f"error: {e}")
    except Exception as e:  # noqa: BLE001 - only TensorFlow's out-of-space error becomes a line
        # TensorFlow's ResourceExhaustedError (a full disk while writing the SavedModel, memory)
        # is no OSError; matched by name: TensorFlow is not imported when this module is.
        if type(e).__name__ != "ResourceExhaustedError":
            raise
        reason = (str(e).strip().splitlines() or ["resource exhausted"])[0][:200]
        sys.exit(f"error: out of disk space or memory: {reason}; the previous output, if any, "
                 f"is left as it was")
    except (KeyboardInterrupt, Stopped) as e:
        name = str(e) if isinstance(e, Stopped) else "SIGINT"
        print(f"interrupted ({name}): the previous output, if any, is left as it was",
              file=sys.stderr)
        sys.exit(128 + signal.Signals[name].value)


def stage_config(args, config, **changes):
    """`config` with what every stage takes from its flags: --seed, --quick and --model-dir (the
    repo's folder of `config` by default), and the stage's own `changes` (None: keep the
    config's)."""
    return configs.override(config, seed=args.seed, quick=args.quick, **changes, model_dir=str(
        args.model_dir or configs.repo_path(config.model_dir)))

