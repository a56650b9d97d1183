"""Properties of the one criteria implementation, for all inputs (hypothesis, bounded): the
same masks whatever the float dtype, ties broken by position alike, the counts each rule
promises, and masks that only ever shrink. NumPy only."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pruning import criteria

PATTERNS = ["unstructured", "1x4", "2x2", "2:4", "1:3", "units", "inputs"]
LAYOUTS = [criteria.DENSE, criteria.Layout((-2,), (-1,)), criteria.Layout((-2, -1), (-2,)),
           criteria.Layout(gates=2)]


@st.composite
def kernels(draw):
    """1-3 kernels of rank 2-4, values k/8 for small integers k: exact in float16, with ties."""
    count = draw(st.integers(1, 3))
    found = []
    for _ in range(count):
        shape = draw(st.lists(st.integers(1, 5), min_size=2, max_size=4))
        shape[-1] = 2 * draw(st.integers(1, 3))  # even, for the two-gate layout
        values = draw(st.lists(st.integers(-16, 16), min_size=int(np.prod(shape)),
                               max_size=int(np.prod(shape))))
        found.append(np.array(values, np.float64).reshape(shape) / 8)
    return found


SETTINGS = settings(max_examples=60, deadline=None, derandomize=True)


@SETTINGS
@given(kernels(), st.sampled_from(PATTERNS), st.sampled_from(["layer-sparsity",
                                                               "global-sparsity"]),
       st.floats(0.0, 0.95), st.sampled_from(LAYOUTS))
def test_masks_are_the_same_in_float16_float32_and_float64(ws, pattern, criterion, sparsity,
                                                          layout):
    layouts = [layout] * len(ws)
    masks = [criteria.criterion_masks([w.astype(dtype) for w in ws], criterion, sparsity,
                                      pattern=pattern, layouts=layouts)
             for dtype in ("float16", "float32", "float64")]
    for other in masks[1:]:
        for a, b in zip(masks[0], other):
            np.testing.assert_array_equal(a, b)


@SETTINGS
@given(kernels(), st.floats(0.0, 0.99))
def test_layer_sparsity_keeps_exactly_the_count_it_promises(ws, sparsity):
    for w, m in zip(ws, criteria.layer_sparsity_masks(ws, sparsity)):
        assert m.sum() == max(1, round((1 - sparsity) * w.size))


@SETTINGS
@given(kernels(), st.sampled_from(PATTERNS), st.floats(0.0, 0.6), st.floats(0.0, 0.4),
       st.sampled_from(LAYOUTS))
def test_pruning_again_only_removes_weights(ws, pattern, first, more, layout):
    layouts = [layout] * len(ws)
    before = criteria.criterion_masks(ws, "layer-sparsity", first, pattern=pattern,
                                      layouts=layouts)
    after = criteria.criterion_masks(ws, "layer-sparsity", first + more, previous=before,
                                     pattern=pattern, layouts=layouts)
    for b, a in zip(before, after):
        assert not (a & ~b).any()


@SETTINGS
@given(kernels(), st.sampled_from(["units", "inputs"]), st.floats(0.0, 0.9),
       st.sampled_from(LAYOUTS))
def test_a_structure_keeps_or_drops_each_group_whole(ws, structure, sparsity, layout):
    for w, m in zip(ws, criteria.criterion_masks(ws, "layer-sparsity", sparsity,
                                                 pattern=structure, layouts=[layout] * len(ws))):
        grouped = criteria.as_groups(m, structure, layout)
        assert (grouped.all(axis=0) | ~grouped.any(axis=0)).all()


@pytest.mark.parametrize("dtype", ["float16", "float32", "float64"])
def test_a_nan_weight_is_pruned_first(dtype):
    w = np.array([[np.nan, 0.5], [0.1, -0.2]], dtype)
    (mask,) = criteria.layer_sparsity_masks([w], 0.5)
    assert mask.tolist() == [[False, True], [False, True]]


@SETTINGS
@given(st.lists(st.sampled_from([0.0, 0.125, 0.5, 1.0, 2.0, np.nan]), min_size=1, max_size=40),
       st.data())
def test_the_largest_kept_are_the_first_of_a_stable_descending_sort(values, data):
    """The partition finds what the readable rule says: sort by magnitude, largest first, ties
    by position, NaN last; keep the first `keep`."""
    magnitudes = np.array(values)
    keep = data.draw(st.integers(0, magnitudes.size))
    order = np.argsort(-np.where(np.isnan(magnitudes), -1, magnitudes), kind="stable")
    expected = np.zeros(magnitudes.size, bool)
    expected[order[:keep]] = True
    np.testing.assert_array_equal(criteria._keep_largest(magnitudes, keep), expected)
