"""Stage 1: train the dense classifier (784-512-512-10 MLP by default) and checkpoint it.

    python train_network_dense.py                 # the original experiment (25 epochs)
    python train_network_dense.py --network lenet-5   # Caffe's LeNet-5, its recipe (configs.py)
    python train_network_dense.py --epochs 5 --model-dir /tmp/dense
    python train_network_dense.py --network lenet-300-100 --shift 2   # on moved images
    python train_network_dense.py --dataset my_images.npz   # your own data: docs/own-data.md
    python train_network_dense.py --quick         # smoke test: MNIST subset, 1 epoch

Writes <model-dir>/model.keras (weights + optimizer state), config.json (the record: the config
as it ran, the software, the results) and stage.json. <model-dir> must be new, empty or this
script's earlier output (docs/when-things-go-wrong.md); it is replaced only when the run
succeeds.
"""
import time

import configs
from datasets import images
from utils import cli, flags
from utils.files import backup, stage_output


def main():
    p = cli.parser(__doc__)
    p.add_argument("--epochs", type=cli.positive_int,
                   help="training epochs (default: the network's recipe, 25 for mlp)")
    flags.add_flags(p, configs.TRAINING, configs.dense_config())
    cli.folder_flag(p, "--model-dir", "output folder", configs.DenseConfig.model_dir)
    args = p.parse_args()
    quick = configs.QUICK if args.quick else {}
    config = cli.stage_config(args, configs.dense_config(args.network),
                              epochs=args.epochs or quick.get("epochs"),
                              **flags.changes(args, configs.TRAINING))
    from networks.builders import parameter_count  # TensorFlow starts here (utils/cli.py)
    from training.checkpoints import save_checkpoint, with_data
    from training.evaluate import evaluate, logits_function
    from training.fit import check_memory, check_shift, train_dense

    with stage_output(config.model_dir, "train_network_dense.py") as out:
        data = images.from_flags(args)
        config = with_data(config, data)
        check_shift(config)
        check_memory(parameter_count(config), data, config.network)
        start = time.perf_counter()
        with backup(config.model_dir, "train_network_dense.py", config) as resume:  # kept
            model, optimizer, history = train_dense(config, data, backup_dir=resume)  # until
            seconds = time.perf_counter() - start  # the checkpoint is written
            test_acc, test_loss = evaluate(logits_function(model), *data["test"])
            save_checkpoint(out, model, optimizer, config, results=dict(
                test_accuracy=test_acc, test_loss=test_loss, train_seconds=seconds,
                history=history))
    print(f"test accuracy {test_acc:.4f}  loss {test_loss:.4f}  ({seconds:.1f} s of training)")
    print(f"saved {config.model_dir}/")


if __name__ == "__main__":
    cli.run(main)
