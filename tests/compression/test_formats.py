import numpy as np
import pytest

from compression import coo
from compression import formats as sf


def random_layer(shape=(40, 600), density=0.05, seed=0, name="fc"):
    rng = np.random.default_rng(seed)
    w = rng.normal(0, 0.05, shape).astype(np.float32) * (rng.random(shape) < density)
    w[0, :] = 0.0
    w[0, 0], w[0, -1] = 0.5, -0.4           # a gap of 599 columns in row 0: needs padding
    w[-1, :] = 0.0                          # an empty row
    return dict(name=name, bias=rng.normal(size=shape[1]).astype(np.float32),
                **coo.to_coo(w))


LOSSLESS = ["coo16", "csr8", "bitmask"]


@pytest.mark.parametrize("fmt", LOSSLESS)
def test_lossless_formats_round_trip_exactly(fmt, tmp_path):
    layers = [random_layer(), random_layer((30, 7), 0.8, seed=1, name="out")]
    sf.save(tmp_path / "w.npz", layers, fmt)
    loaded_fmt, decoded = sf.load(tmp_path / "w.npz")
    assert loaded_fmt == fmt
    for a, b in zip(layers, decoded):
        assert a["name"] == b["name"]
        for key in ("values", "indices", "shape", "bias"):
            np.testing.assert_array_equal(a[key], b[key])


def test_csr8_pads_gaps_over_255_and_keeps_indices():
    layer = random_layer()
    encoded = sf.encode([layer], "csr8")[0]
    pads = int(np.sum(encoded["gaps"] == 0))
    assert pads >= 2  # row 0 jumps from column 0 to 599: two padding entries (2 x 255 + 89)
    assert len(encoded["gaps"]) == len(layer["values"]) + pads
    assert encoded["row_ptr"].dtype == np.int32 and encoded["row_ptr"][-1] == len(encoded["gaps"])


def test_gap_stream_by_hand():
    w = np.zeros((2, 300), np.float32)
    w[0, 2], w[0, 3], w[1, 299] = 1, 2, 3
    encoded = sf.encode([dict(bias=np.zeros(300, np.float32), **coo.to_coo(w))], "csr8")[0]
    # row 0: gaps 3 (from column -1 to 2) and 1; row 1: 300 = one pad of 255, then 45
    np.testing.assert_array_equal(encoded["gaps"], [3, 1, 0, 45])
    np.testing.assert_array_equal(encoded["row_ptr"], [0, 2, 4])


def test_byte_counts_by_hand():
    layer = random_layer((4, 3), 0.0)
    layer.update(coo.to_coo(np.array([[1, 0, 0], [0, 0, 0], [0, 0, 0], [0, 0, 2]],
                                                np.float32)))
    shape_bias = 2 * 4 + 3 * 4
    assert sf.nbytes(sf.encode([layer], "coo16")) == 2 * (4 + 2 + 2) + shape_bias
    assert sf.nbytes(sf.encode([layer], "csr8")) == 2 * (1 + 4) + 5 * 4 + shape_bias
    assert sf.nbytes(sf.encode([layer], "csr8-fp16")) == 2 * (1 + 2) + 5 * 4 + shape_bias
    assert sf.nbytes(sf.encode([layer], "bitmask")) == 2 + 2 * 4 + shape_bias


def test_csr8_is_smaller_than_coo16_and_bitmask_wins_above_a_few_percent():
    layer = random_layer((512, 512), 0.05)
    size = {fmt: sf.nbytes(sf.encode([layer], fmt)) for fmt in ("coo16", "csr8", "bitmask")}
    assert size["csr8"] < size["coo16"] and size["bitmask"] < size["coo16"]


def test_fp16_error_is_float16_rounding():
    layer = random_layer()
    (decoded,) = sf.decode(sf.encode([layer], "csr8-fp16"), "csr8-fp16", ["fc"])
    np.testing.assert_array_equal(decoded["values"], layer["values"].astype(np.float16))


@pytest.mark.parametrize("bits", [2, 4, 5, 8])
def test_shared_weights_error_is_bounded_by_the_centroid_spacing(bits):
    layer = random_layer(density=0.2)
    encoded = sf.encode([layer], f"shared-{bits}bit")[0]
    (decoded,) = sf.decode([encoded], f"shared-{bits}bit", ["fc"])
    np.testing.assert_array_equal(decoded["indices"], layer["indices"])
    codebook = encoded["codebook"].astype(np.float32)
    assert encoded["codebook"].dtype == encoded["bias"].dtype == np.float16
    assert len(codebook) == 2 ** bits and np.all(np.diff(codebook) >= 0)
    # each value goes to its nearest centroid: error <= half the widest neighbouring gap, plus
    # the centroid's float16 rounding (half a float16 step: 2^-11 of its magnitude)
    error = np.abs(decoded["values"] - layer["values"])
    assert error.max() <= np.diff(codebook).max() / 2 + np.abs(codebook).max() * 2.0 ** -11
    np.testing.assert_array_equal(decoded["values"], codebook[sf.unpack_bits(
        encoded["codes"], bits, len(layer["values"]))])
    assert len(encoded["codes"]) == int(np.ceil(len(layer["values"]) * bits / 8))


def test_kmeans_finds_obvious_clusters():
    values = np.r_[np.full(50, -1.0), np.full(30, 0.2), np.full(20, 3.0)]
    centroids, codes = sf.kmeans_1d(values, 4)
    for cluster in (-1.0, 0.2, 3.0):  # as stored: float16, 0.2 -> 0.19995
        assert np.isclose(centroids, sf.as_stored(cluster), rtol=0, atol=0).any()
    np.testing.assert_array_equal(centroids[codes], sf.as_stored(values))


@pytest.mark.parametrize("bits", [1, 3, 5, 7, 8])
def test_bit_packing_round_trip(bits):
    codes = np.random.default_rng(bits).integers(0, 2 ** bits, 101).astype(np.uint8)
    packed = sf.pack_bits(codes, bits)
    assert len(packed) == int(np.ceil(101 * bits / 8))
    np.testing.assert_array_equal(sf.unpack_bits(packed, bits, 101), codes)


@pytest.mark.parametrize("bad", ["coo8", "shared-9bit", "shared-0bit"])
def test_unknown_formats_are_rejected(bad):
    with pytest.raises(ValueError, match="format|bits"):
        sf.encode([random_layer()], bad)


@pytest.mark.parametrize("symbols", [[3, 3, 3], [0, 1], list(range(40)) * 3 + [7] * 500])
def test_huffman_round_trip_and_kraft_equality(symbols):
    symbols = np.array(symbols, np.uint8)
    lengths, packed = sf.huffman_encode(symbols)
    np.testing.assert_array_equal(sf.huffman_decode(lengths, packed, len(symbols)), symbols)
    used = lengths[lengths > 0].astype(float)
    assert len(used) == 1 or np.sum(2.0 ** -used) == pytest.approx(1.0)  # a complete prefix code


def test_huffman_gives_frequent_symbols_short_codes():
    lengths = sf.huffman_lengths(np.array([0] * 8 + [1] * 4 + [2] * 2 + [3, 4]))
    np.testing.assert_array_equal(lengths, [1, 2, 3, 4, 4])


def test_huffman_format_decodes_like_shared_and_is_smaller():
    layers = [random_layer(density=0.2)]
    plain, coded = sf.encode(layers, "shared-5bit"), sf.encode(layers, "shared-5bit-huffman")
    a = sf.decode(plain, "shared-5bit", ["fc"])[0]
    b = sf.decode(coded, "shared-5bit-huffman", ["fc"])[0]
    np.testing.assert_array_equal(a["values"], b["values"])
    np.testing.assert_array_equal(a["indices"], b["indices"])
    assert sf.nbytes(coded) < sf.nbytes(plain)


@pytest.mark.parametrize("fmt", sf.FORMATS)
def test_a_layer_pruned_away_entirely_round_trips(fmt):
    empty = dict(name="a", values=np.zeros(0, np.float32), indices=np.zeros((0, 2), np.int16),
                 shape=np.array([5, 3], np.int32), bias=np.ones(3, np.float32))
    (back,) = sf.decode(sf.encode([empty], fmt), fmt, ["a"])
    assert back["values"].shape == (0,) and back["indices"].shape == (0, 2)
    np.testing.assert_array_equal(back["bias"], empty["bias"])


@pytest.mark.parametrize("fmt", sf.FORMATS)
def test_a_layer_with_more_than_32767_inputs_keeps_its_indices(fmt, tmp_path):
    """182x182 images give an MLP 33,124 inputs: past int16, so that layer's indices are int32
    (and counted so); the next layer's stay int16."""
    layers = [random_layer((33124, 3), 0.01), random_layer((3, 2), 1.0, name="out")]
    assert layers[0]["indices"].dtype == np.int32 and layers[0]["indices"][:, 0].max() > 32767
    assert layers[1]["indices"].dtype == np.int16
    sf.save(tmp_path / "w.npz", layers, fmt)
    _, decoded = sf.load(tmp_path / "w.npz")
    for a, b in zip(layers, decoded):
        np.testing.assert_array_equal(a["indices"], b["indices"])
        assert b["indices"].dtype == a["indices"].dtype
    if fmt == "coo16":
        nnz = len(layers[0]["values"])
        assert sf.encode(layers[:1], fmt)[0]["indices"].nbytes == 2 * 4 * nnz


@pytest.mark.parametrize("fmt", sf.FORMATS)
def test_where_the_bytes_go_covers_every_array_of_every_format(fmt):
    """Every array a format writes is declared a part (positions, values, codebooks, biases,
    header), and the parts sum to the layer's bytes."""
    layer = random_layer()
    (arrays,) = sf.encode([layer], fmt)
    parts = sf.breakdown(arrays)
    assert set(parts) == set(sf.PARTS) and sum(parts.values()) == sf.nbytes([arrays])
    bias_bytes = 2 if fmt.startswith("shared") else 4  # float16 in the shared-* formats
    assert parts["biases"] == bias_bytes * 600 and parts["values"] > 0 and parts["positions"] > 0
    assert (parts["codebooks"] > 0) == fmt.startswith("shared")


def test_where_the_bytes_go_known_answer():
    """coo16 of a 40x600 layer with n kept weights: 2 int16 per position, a float32 per value,
    600 float32 biases, the int32 shape."""
    layer = random_layer()
    n = len(layer["values"])
    assert sf.breakdown(sf.encode([layer], "coo16")[0]) == dict(
        positions=4 * n, values=4 * n, codebooks=0, biases=2400, header=8)
