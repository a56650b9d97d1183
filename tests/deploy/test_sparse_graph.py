import subprocess
import sys

import keras
import numpy as np
import pytest

from compression import formats
from deploy.sparse_graph import SparseNetwork, sparse_layers
from pruning import prune_low_magnitude
from tests.helpers import TINY, TINY_CONV, tiny_conv_data, tiny_data, tiny_model
from training.evaluate import logits_function


def pruned_tiny_model():
    model, _ = tiny_model()
    prune_low_magnitude(model, "threshold", 0.25)
    return model


def test_sparse_logits_equal_dense_logits():
    model = pruned_tiny_model()
    x = tiny_data()["test"][0]
    network = SparseNetwork(sparse_layers(model))
    np.testing.assert_allclose(network(x).numpy(), logits_function(model)(x).numpy(), atol=1e-5)


def test_sparse_layers_hold_only_the_kept_weights():
    model = pruned_tiny_model()
    layers = sparse_layers(model)
    assert [l["name"] for l in layers] == ["fc1", "fc2", "fc3"]
    assert [len(l["values"]) for l in layers] == [
        np.count_nonzero(k.numpy()) for k in (layer.kernel for layer in model.layers
                                              if hasattr(layer, "kernel"))]
    assert all(l["indices"].dtype == np.int16 for l in layers)


def test_saved_model_predicts_without_this_repository(tmp_path):
    model = pruned_tiny_model()
    x = tiny_data()["test"][0]
    network = SparseNetwork(sparse_layers(model))
    network.save(tmp_path / "saved_model")
    np.save(tmp_path / "x.npy", x)
    # A fresh interpreter in an empty folder: only TensorFlow, none of this repo's modules.
    code = ("import numpy as np, tensorflow as tf\n"
            "m = tf.saved_model.load('saved_model')\n"
            "out = m.signatures['serving_default'](pixels=tf.constant(np.load('x.npy')))\n"
            "np.save('logits.npy', list(out.values())[0].numpy())\n")
    subprocess.run([sys.executable, "-c", code], cwd=tmp_path, check=True, capture_output=True,
                   env={"PATH": "/usr/bin:/bin", "TF_CPP_MIN_LOG_LEVEL": "2"})
    np.testing.assert_allclose(np.load(tmp_path / "logits.npy"), network(x).numpy(), atol=1e-6)
    assert TINY.input_size == x.shape[1]


@pytest.mark.parametrize("kernel", ["coo", "csr", "gather", "auto"])
@pytest.mark.parametrize("batch", [1, 17, 40])
def test_every_kernel_matches_dense_at_every_batch_size(kernel, batch):
    model = pruned_tiny_model()
    x = tiny_data(n=batch)["train"][0]
    network = SparseNetwork(sparse_layers(model), kernel=kernel)
    np.testing.assert_allclose(network(x).numpy(), logits_function(model)(x).numpy(), atol=1e-5)


def test_unknown_kernel_is_rejected():
    with pytest.raises(ValueError, match="kernel must be one of"):
        SparseNetwork(sparse_layers(pruned_tiny_model()), kernel="blas")


def pruned_tiny_conv_model():
    model, _ = tiny_model(TINY_CONV)
    prune_low_magnitude(model, "global-sparsity", 0.6)
    return model


@pytest.mark.parametrize("kernel", ["coo", "csr", "gather", "auto"])
def test_a_pruned_conv_network_deploys_with_the_keras_logits(kernel):
    model = pruned_tiny_conv_model()
    layers = sparse_layers(model)
    assert [(l["name"], l["spec"]["kind"], l["spec"].get("pool")) for l in layers] == [
        ("conv1", "conv", 2), ("conv2", "conv", 2), ("fc1", "dense", None),
        ("fc2", "dense", None)]
    assert [tuple(l["shape"]) for l in layers] == [(25, 3), (75, 4), (4, 12), (12, 4)]
    network = SparseNetwork(layers, kernel=kernel)
    for x in (tiny_conv_data()["test"][0], tiny_conv_data()["test"][0][:1]):  # both "auto" paths
        np.testing.assert_allclose(network(x).numpy(), logits_function(model)(x).numpy(),
                                   atol=1e-5)


def test_a_conv_network_survives_a_storage_format_round_trip(tmp_path):
    model = pruned_tiny_conv_model()
    layers = sparse_layers(model)
    formats.save(tmp_path / "w.npz", layers, "csr8")
    _, decoded = formats.load(tmp_path / "w.npz")
    assert [l["spec"] for l in decoded] == [l["spec"] for l in layers]
    x = tiny_conv_data()["test"][0]
    np.testing.assert_allclose(SparseNetwork(decoded)(x).numpy(),
                               logits_function(model)(x).numpy(), atol=1e-5)


def test_a_layer_the_sparse_network_cannot_run_is_named():
    inputs = keras.Input((6, 6, 1))
    h = keras.layers.Conv2D(2, 3, padding="same", name="padded")(inputs)
    model = keras.Model(inputs, keras.layers.Dense(2)(keras.layers.Flatten()(h)))
    with pytest.raises(ValueError, match="cannot deploy padded: only valid, stride-1"):
        sparse_layers(model)
