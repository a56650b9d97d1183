"""What the three stage scripts share on the command line: common flags and clean failures."""
import argparse
import sys

from configs import QUICK
from utils.checkpoints import CheckpointError
from utils.mnist import MnistError, load_mnist

EXPECTED_ERRORS = (CheckpointError, MnistError, ValueError)


def parser(description):
    """ArgumentParser with the flags every stage has: data dir, seed, quick mode."""
    p = argparse.ArgumentParser(description=description,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", help="folder with MNIST (IDX files or mnist.npz); default: "
                   "$MNIST_DIR, data/mnist/, Keras' cache, else download")
    p.add_argument("--seed", type=int, help="random seed (default 123)")
    p.add_argument("--quick", action="store_true",
                   help="smoke test: a small subset of MNIST and 1 epoch")
    return p


def run(main):
    """Call main(); an expected error becomes one 'error: ...' line and exit status 1."""
    try:
        main()
    except EXPECTED_ERRORS as e:
        sys.exit(f"error: {e}")
    except KeyboardInterrupt:
        sys.exit("interrupted: the previous checkpoint, if any, is left as it was")


def load_data(args):
    """MNIST splits for a stage: all of it, or the --quick subset."""
    if args.quick:
        return load_mnist(args.data_dir, QUICK["train_size"], QUICK["val_size"], QUICK["test_size"])
    return load_mnist(args.data_dir)
