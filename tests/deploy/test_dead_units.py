"""Dead units leave the stored network, and its predictions stay the Keras model's: by hand on a
tiny dense network, and as a property on the tiny LeNet-5 (hypothesis, bounded)."""
import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from compression import coo
from deploy.dead_units import drop_dead_units
from deploy.sparse_graph import SparseNetwork, sparse_layers
from tests.helpers import TINY_CONV, tiny_conv_data, tiny_model
from training.evaluate import logits_function


def dense(name, w, b, activation="relu"):
    return dict(name=name, bias=np.array(b, np.float32), spec=dict(kind="dense",
                activation=activation), **coo.to_coo(np.array(w, np.float32)))


def test_known_answer_on_a_dense_network():
    # unit 0 is alive; unit 1 is read by nothing; unit 2 is fed by nothing: relu(-1) = 0 and
    # relu(3) = 3 are what layer 2 gets from it, folded into its biases as 3 * its weights
    first = dense("a", [[1, 2, 0], [4, 0, 0]], [0.5, 0.5, 3])
    second = dense("b", [[1, 0], [0, 0], [2, -1]], [10, 20], activation=None)
    a, b = drop_dead_units([first, second])
    assert list(a["shape"]) == [2, 1] and list(b["shape"]) == [1, 2]
    np.testing.assert_array_equal(coo.from_coo(a), [[1], [4]])
    np.testing.assert_array_equal(a["bias"], [0.5])
    np.testing.assert_array_equal(coo.from_coo(b), [[1, 0]])
    np.testing.assert_array_equal(b["bias"], [10 + 3 * 2, 20 - 3])
    assert list(first["shape"]) == [2, 3] and len(first["bias"]) == 3  # the input untouched


def test_a_dead_unit_kills_the_units_only_it_read_and_outputs_stay():
    # b's unit 1 is read by nothing, so a's unit 1, read only by it, goes too; the logits'
    # units (c's columns) stay, even one that nothing feeds
    a = dense("a", [[1, 1]], [0, 0])
    b = dense("b", [[1, 0], [0, 5]], [0, 0])
    c = dense("c", [[2, 0], [0, 0]], [0, 7], activation=None)
    out = drop_dead_units([a, b, c])
    assert [tuple(l["shape"]) for l in out] == [(1, 1), (1, 1), (1, 2)]
    np.testing.assert_array_equal(out[2]["bias"], [0, 7])


def test_a_layer_that_feeds_nothing_keeps_one_unit_and_the_logits_are_its_biases():
    a = dense("a", [[0, 0]], [1, 2])
    b = dense("b", [[3, 0], [0, 4]], [0, 0], activation=None)
    out = drop_dead_units([a, b])
    assert [tuple(l["shape"]) for l in out] == [(1, 1), (1, 2)] and len(out[1]["values"]) == 0
    np.testing.assert_array_equal(out[1]["bias"], [3, 8])
    x = np.ones((2, 1), np.float32)
    np.testing.assert_array_equal(SparseNetwork(out)(x).numpy(), [[3, 8], [3, 8]])


def test_a_layer_that_feeds_nothing_kills_every_layer_before_it():
    a = dense("a", [[1, 2, 3], [4, 5, 6]], [0, 0, 0])
    b = dense("b", [[1, 1], [2, 2], [3, 3]], [0, 0])
    c = dense("c", [[0, 0], [0, 0]], [1, 2])  # reads nothing: every unit before it is dead
    d = dense("d", [[1, 0], [0, 1]], [0, 0], activation=None)
    out = drop_dead_units([a, b, c, d])
    assert [tuple(l["shape"]) for l in out] == [(2, 1), (1, 1), (1, 1), (1, 2)]
    assert [len(l["values"]) for l in out] == [0, 0, 0, 0]
    np.testing.assert_array_equal(out[3]["bias"], [1, 2])  # relu(c's biases), folded


def test_codes_follow_their_weights():
    layer = dense("a", [[1, 2, 0], [4, 0, 5]], [0, 0, 0])
    layer.update(codebook=np.array([1, 2, 4, 5], np.float32), codes=np.array([0, 1, 2, 3]))
    reader = dense("b", [[1], [0], [1]], [0], activation=None)
    a, _ = drop_dead_units([layer, reader])
    np.testing.assert_array_equal(a["codebook"][a["codes"]], a["values"])
    np.testing.assert_array_equal(a["values"], [1, 4, 5])


@settings(max_examples=8, deadline=None, derandomize=True)
@given(st.data())
def test_the_stored_network_predicts_as_the_keras_one(data):
    """Whole units zeroed at random (fed by nothing, read by nothing) and single weights too, in
    the tiny LeNet-5 (2 convs with max-pooling, no activation; a flatten; 2 dense): dropping its
    dead units leaves the Keras logits, and every hidden unit left is fed and read."""
    model, _ = tiny_model(TINY_CONV)
    for layer in model.layers:
        if getattr(layer, "kernel", None) is None:
            continue
        kernel = layer.kernel.numpy()
        units, inputs = kernel.shape[-1], kernel.shape[-2]
        kernel *= np.array(data.draw(st.lists(st.booleans(), min_size=kernel.size,
                                              max_size=kernel.size))).reshape(kernel.shape)
        for unit in data.draw(st.lists(st.integers(0, units - 1), max_size=units)):
            kernel[..., unit] = 0
        for row in data.draw(st.lists(st.integers(0, inputs - 1), max_size=inputs)):
            kernel[..., row, :] = 0
        layer.kernel.assign(kernel)
        layer.bias.assign(np.random.default_rng(0).normal(size=units))
    layers = sparse_layers(model)
    stored = drop_dead_units(layers)
    x = tiny_conv_data()["test"][0]
    np.testing.assert_allclose(SparseNetwork(stored)(x).numpy(), logits_function(model)(x),
                               atol=1e-4)
    for layer, after in zip(stored, stored[1:]):
        units = int(layer["shape"][1])
        fed = np.unique(layer["indices"][:, 1])
        read = np.unique(after["indices"][:, 0] % units)
        assert units == 1 or len(fed) == len(read) == units, layer["name"]
        assert int(after["shape"][0]) % units == 0
