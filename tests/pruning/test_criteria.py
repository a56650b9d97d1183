import numpy as np
import pytest

from pruning import criteria


def test_mask_keeps_weights_at_threshold():
    w = np.array([[-0.05, -0.03, -0.01], [0.0, 0.03, 0.029]])
    np.testing.assert_array_equal(criteria.threshold_mask(w, 0.03),
                                  [[True, True, False], [False, True, False]])


def test_zero_threshold_keeps_everything_including_zeros():
    w = np.array([[0.0, 1.0]])
    assert criteria.threshold_mask(w, 0.0).all()


@pytest.mark.parametrize("bad", [-0.1, np.nan, np.inf])
def test_threshold_must_be_finite_and_non_negative(bad):
    with pytest.raises(ValueError, match="threshold must be"):
        criteria.threshold_mask(np.ones((2, 2)), bad)


def test_check_masks_names_the_emptied_layer():
    with pytest.raises(ValueError, match="every weight of fc2"):
        criteria.check_masks([np.array([True]), np.array([False, False])], ["fc1", "fc2"])


def test_check_masks_names_the_value_that_went_too_far():
    with pytest.raises(ValueError, match="std pruning at quality 50 removes every weight of "
                                         "fc1: choose a smaller quality"):
        criteria.check_masks([np.array([False])], ["fc1"], "std", 50)


def test_sparsity_counts_zeros():
    assert criteria.sparsity(np.array([True, False, False, False])) == 0.75


def test_std_criterion_uses_each_layers_own_std():
    a = np.array([-2.0, -1.0, 1.0, 2.0])          # std 1.58
    b = 10 * a                                    # std 15.8
    masks = criteria.std_masks([a, b], 1.0)
    np.testing.assert_array_equal(masks[0], [True, False, False, True])
    np.testing.assert_array_equal(masks[1], [True, False, False, True])


def test_layer_sparsity_prunes_each_layer_to_the_target():
    w1 = np.arange(1, 11, dtype=np.float32) * np.array([1, -1] * 5)
    w2 = np.array([[0.5, -0.1], [0.3, 0.2]])
    m1, m2 = criteria.layer_sparsity_masks([w1, w2], 0.5)
    np.testing.assert_array_equal(np.flatnonzero(m1), [5, 6, 7, 8, 9])  # the five largest |w|
    np.testing.assert_array_equal(m2, [[True, False], [True, False]])


def test_layer_sparsity_always_keeps_one_weight():
    (mask,) = criteria.layer_sparsity_masks([np.array([0.1, 0.2, 0.3])], 0.99)
    np.testing.assert_array_equal(mask, [False, False, True])


def test_global_sparsity_is_one_cut_across_layers():
    small, large = np.array([0.1, 0.2, 0.3, 0.4]), np.array([1.0, 2.0])
    m_small, m_large = criteria.global_sparsity_masks([small, large], 0.5)
    np.testing.assert_array_equal(m_small, [False, False, False, True])
    assert m_large.all()
    m_small, m_large = criteria.global_sparsity_masks([small, large], 1 / 3)
    np.testing.assert_array_equal(m_small, [False, False, True, True])
    assert m_large.all()


@pytest.mark.parametrize("criterion, value", [("threshold", 0.5), ("std", 0.5),
                                              ("layer-sparsity", 0.6), ("global-sparsity", 0.6)])
def test_masks_nest_inside_the_previous_ones(criterion, value):
    rng = np.random.default_rng(1)
    weights = [rng.normal(size=(20, 10)), rng.normal(size=(10, 3))]
    previous = [rng.random(w.shape) > 0.3 for w in weights]
    masks = criteria.criterion_masks(weights, criterion, value, previous)
    for m, p in zip(masks, previous):
        assert not (m & ~p).any()


@pytest.mark.parametrize("bad", [-0.1, 1.0, 1.5])
def test_sparsity_must_be_a_fraction(bad):
    with pytest.raises(ValueError, match=r"sparsity must be in \[0, 1\)"):
        criteria.layer_sparsity_masks([np.ones(4)], bad)


def test_unknown_criterion_is_rejected():
    with pytest.raises(ValueError, match="criterion must be one of"):
        criteria.criterion_masks([np.ones(4)], "random", 0.5)


def test_sparsity_of_several_masks_counts_them_together():
    masks = [np.array([True, False]), np.array([False, False, False, True])]
    assert criteria.sparsity(masks) == pytest.approx(4 / 6)


# --- blocks: (outputs, inputs), along the input rows of a kernel [inputs, outputs]
def test_block_scores_are_mean_magnitudes_and_edge_blocks_count_their_own_weights():
    w = -np.arange(1.0, 11.0).reshape(5, 2)       # inputs 5, outputs 2
    np.testing.assert_array_equal(criteria.block_scores(w, (1, 4)),
                                  [[4.0, 5.0], [9.0, 10.0]])  # rows 0-3 and the edge row 4
    np.testing.assert_array_equal(criteria.block_scores(w, (2, 1)), [[1.5], [3.5], [5.5],
                                                                     [7.5], [9.5]])


def test_expand_blocks_inverts_the_tiling_of_a_conv_kernel():
    block_mask = np.array([[True, False], [False, True]])
    mask = criteria.expand_blocks(block_mask, (1, 3, 2), (1, 2))  # seen as [3, 2]
    np.testing.assert_array_equal(mask.reshape(3, 2), [[1, 0], [1, 0], [0, 1]])


def test_in_blocks_keeps_the_count_in_the_largest_blocks():
    w = np.array([[0.9, 0.0], [0.0, 0.5], [0.1, 0.5], [0.1, 0.4],
                  [0.0, 0.0], [0.0, 0.1], [0.0, 0.0], [0.0, 0.3]])
    (mask,) = criteria.in_blocks([np.abs(w) >= 0.4], [w], (1, 4))  # 4 kept -> one 1x4 block
    expected = np.zeros((8, 2), bool)
    expected[:4, 1] = True                        # mean 0.35 beats column 0's 0.275
    np.testing.assert_array_equal(mask, expected)


def test_in_blocks_counts_the_weights_of_the_smaller_blocks_at_the_edge():
    """5 inputs in 1x4 blocks: one block of 4 weights and one of 1. Counted in blocks (5 / 4 ->
    one), the edge block alone would keep 1 weight of the 5 asked."""
    assert [criteria.blocks_holding(sizes, kept) for sizes, kept in [
        ([1, 4], 5), ([1, 4], 1), ([4, 1], 1), ([4, 4], 0), ([4, 4], 9), ([4, 4, 4], 7)]] == [
        2, 1, 1, 0, 2, 2]
    w = np.array([[0.2], [0.2], [0.2], [0.2], [0.9]])
    every, edge = criteria.in_blocks([np.abs(w) >= 0.2, np.abs(w) >= 0.5], [w, w], (1, 4))
    assert every.all() and edge.ravel().tolist() == [False] * 4 + [True]


def test_in_blocks_keeps_nothing_when_the_criterion_keeps_nothing_and_one_when_it_keeps_one():
    w = np.ones((8, 1))
    empty, single = criteria.in_blocks([np.zeros((8, 1), bool), np.eye(8, 1, dtype=bool)],
                                       [w, w], (1, 4))
    assert not empty.any() and single.sum() == 4


@pytest.mark.parametrize("criterion, value", [("threshold", 0.5), ("std", 1.0),
                                              ("layer-sparsity", 0.75),
                                              ("global-sparsity", 0.75)])
def test_every_criterion_prunes_in_whole_blocks_of_the_unstructured_size(criterion, value):
    rng = np.random.default_rng(0)
    weights = [rng.normal(size=(64, 8)), rng.normal(size=(32, 4))]
    flat = criteria.criterion_masks(weights, criterion, value)
    blocked = criteria.criterion_masks(weights, criterion, value, pattern=(1, 4))
    for f, b in zip(flat, blocked):
        blocks = b.reshape(-1, 4, b.shape[1])
        assert (blocks.all(axis=1) == blocks.any(axis=1)).all()  # all or none of each block
        assert abs(int(b.sum()) - int(f.sum())) <= 2              # the count, to a block
    # nested pruning stays in blocks
    again = criteria.criterion_masks(weights, "layer-sparsity", 0.9, blocked, pattern=(1, 4))
    assert all((a <= b).all() for a, b in zip(again, blocked))


@pytest.mark.parametrize("text, block", [("1x4", (1, 4)), (" 1x16 ", (1, 16)), ((2, 2), (2, 2))])
def test_parse_block(text, block):
    assert criteria.parse_block(text) == block


@pytest.mark.parametrize("bad", ["1x0", "4", "1x4x4", "axb", (0, 4)])
def test_a_bad_block_is_refused(bad):
    with pytest.raises(ValueError, match="block must be OUTPUTSxINPUTS"):
        criteria.parse_block(bad)


def test_n_of_m_keeps_the_n_largest_of_every_m_inputs_of_each_output():
    w = np.array([[.1, -.9], [-.4, .8], [.3, .1], [.2, .2], [.5, .05], [-.6, .3]])  # [6 in, 2 out]
    (mask,) = criteria.n_of_m([np.ones(w.shape, bool)], [w], 2, 4)
    # column 0: rows 0-3 keep .4 and .3; the short group (rows 4-5) keeps both
    np.testing.assert_array_equal(mask[:, 0], [False, True, True, False, True, True])
    np.testing.assert_array_equal(mask[:, 1], [True, True, False, False, True, True])


def test_n_of_m_chooses_only_among_the_weights_already_kept():
    w = np.array([[.9], [.8], [.1], [.2]])
    (mask,) = criteria.n_of_m([np.array([[False], [True], [True], [True]])], [w], 2, 4)
    np.testing.assert_array_equal(mask.ravel(), [False, True, False, True])


def test_a_conv_kernel_in_2_4_has_two_of_every_four_inputs_per_filter():
    w = np.random.default_rng(0).normal(size=(3, 3, 4, 5))  # 36 inputs per filter: 9 groups
    (mask,) = criteria.criterion_masks([w], "layer-sparsity", 0.5, pattern="2:4")
    assert ((mask.reshape(9, 4, 5)).sum(axis=1) == 2).all()


def test_a_sparsity_beyond_n_m_prunes_the_smallest_survivors():
    w = np.random.default_rng(1).normal(size=(64, 8))
    (mask,) = criteria.criterion_masks([w], "layer-sparsity", 0.75, pattern="2:4")
    assert mask.sum() == 128 and (mask.reshape(16, 4, 8).sum(axis=1) <= 2).all()
    (nm,) = criteria.criterion_masks([w], "layer-sparsity", 0.5, pattern="2:4")
    assert not (mask & ~nm).any() and np.abs(w[mask]).min() >= np.abs(w[nm & ~mask]).max()


def test_structured_groups_of_a_conv_kernel_are_its_filters_and_input_channels():
    shape = (3, 3, 4, 5)  # kh, kw, cin, cout
    assert (criteria.groups(shape, "units") == np.arange(5)).all()
    assert (criteria.groups(shape, "inputs") == np.arange(4)[:, None]).all()


@pytest.mark.parametrize("structure, axis", [("units", 1), ("inputs", 0)])
def test_structured_pruning_keeps_whole_groups_of_largest_mean_magnitude(structure, axis):
    rng = np.random.default_rng(0)
    w = rng.normal(size=(6, 8)) * np.linspace(0.1, 1, 8)[None, :] * np.linspace(1, 0.1, 6)[:, None]
    (mask,) = criteria.criterion_masks([w], "layer-sparsity", 0.5, pattern=structure)
    kept = mask.any(axis=1 - axis)
    assert (mask == np.expand_dims(kept, 1 - axis)).all()  # whole groups only
    assert kept.sum() == w.shape[axis] // 2                 # half of them: the criterion's count
    means = np.abs(w).mean(axis=1 - axis)
    assert means[kept].min() > means[~kept].max()           # the largest mean |w|


def test_a_conv_layer_pruned_by_input_channels_drops_whole_channels():
    w = np.ones((3, 3, 4, 2)) * np.array([1, 0.1, 2, 0.2])[:, None]
    (mask,) = criteria.criterion_masks([w], "layer-sparsity", 0.5, pattern="inputs")
    assert mask[:, :, [0, 2]].all() and not mask[:, :, [1, 3]].any()


@pytest.mark.parametrize("text, pattern", [("2:4", ("n:m", 2, 4)), ("1x4", ("block", 1, 4)),
                                           ("units", ("units", 0, 0)),
                                           ("inputs", ("inputs", 0, 0)),
                                           (None, ("block", 1, 1)),
                                           ("unstructured", ("block", 1, 1))])
def test_parse_pattern(text, pattern):
    assert tuple(criteria.parse_pattern(text)) == pattern


@pytest.mark.parametrize("bad", ["0:4", "5:4", "2:", "x4", "2-4"])
def test_a_bad_pattern_is_refused(bad):
    with pytest.raises(ValueError, match="pattern"):
        criteria.parse_pattern(bad)


def test_the_docstring_examples_give_what_they_show():
    import doctest
    assert doctest.testmod(criteria).failed == 0
