"""Stage 1: train the dense classifier (784-512-512-10 MLP by default) and checkpoint it.

    python train_network_dense.py                 # the original experiment (25 epochs)
    python train_network_dense.py --network lenet-5   # Caffe's LeNet-5, its recipe (configs.py)
    python train_network_dense.py --epochs 5 --model-dir /tmp/dense
    python train_network_dense.py --dataset my_images.npz   # your own data (README, "Your data")
    python train_network_dense.py --quick         # smoke test: MNIST subset, 1 epoch

Writes <model-dir>/model.keras (weights + optimizer state), config.json (config + results) and
stage.json. <model-dir> must be new, empty or this script's earlier output (README, "When things go
wrong"); it is replaced only when the run succeeds.
"""
import time

import configs
from utils import cli
from utils.checkpoints import stage_output


def main():
    p = cli.parser(__doc__)
    p.add_argument("--epochs", type=cli.positive_int,
                   help="training epochs (default: the network's recipe, 25 for mlp)")
    cli.folder_flag(p, "--model-dir", "output folder", configs.DenseConfig.model_dir)
    args = p.parse_args()
    quick = configs.QUICK if args.quick else {}
    config = cli.stage_config(args, configs.dense_config(args.network),
                              epochs=args.epochs or quick.get("epochs"))
    import keras  # TensorFlow starts here, once the flags are checked (utils/cli.py)

    from networks.builders import architecture, build_network, parameter_count
    from training.checkpoints import save_checkpoint, with_data
    from training.evaluate import evaluate, logits_function
    from training.fit import check_memory, fit
    keras.utils.set_random_seed(config.seed)

    with stage_output(config.model_dir, "train_network_dense.py") as out:
        data = cli.load_data(args)
        config = with_data(config, data)
        check_memory(parameter_count(config), data, config.network)
        model = build_network(config)
        optimizer = keras.optimizers.SGD(configs.learning_rate(config, 0),
                                         momentum=config.momentum)
        print(f"training {config.network} {architecture(model)} ({model.count_params():,} "
              f"parameters) on {len(data['train'][1]):,} images for {config.epochs} epochs")

        start = time.perf_counter()
        history = fit(model, optimizer, config, data)
        seconds = time.perf_counter() - start
        test_acc, test_loss = evaluate(logits_function(model), *data["test"])
        save_checkpoint(out, model, optimizer, config, results=dict(
            test_accuracy=test_acc, test_loss=test_loss, train_seconds=seconds, history=history))
    print(f"test accuracy {test_acc:.4f}  loss {test_loss:.4f}  ({seconds:.1f} s of training)")
    print(f"saved {config.model_dir}/")


if __name__ == "__main__":
    cli.run(main)
