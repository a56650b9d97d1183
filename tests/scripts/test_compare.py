"""compare_with_papers.py's choice of our point beside a published row: known answers."""
import pytest

from compare_with_papers import at_error, at_reduction, tables


def rows(pruned_val, stored_val, params, bytes_, test=None):
    """Two seeds of a point with these means (the seeds +-0.1 around them)."""
    return [dict(seed=s, dense_error=1.0, pruned_error=(test or pruned_val) + d,
                 pruned_validation_error=pruned_val + d, stored_error=(test or stored_val) + d,
                 stored_validation_error=stored_val + d, params=params + d, bytes=bytes_ + d,
                 stored_units=dict(fc1=30, fc2=10), fine_tune_seconds=1.0)
            for s, d in ((1, -0.1), (2, 0.1))]


POINTS = {"recipe": rows(0.8, 0.8, 12.5, 43), "harder": rows(1.0, 0.95, 33, 96),
          "variational": rows(0.9, 1.2, 60, 150)}


@pytest.mark.parametrize("measure, error, expected", [
    ("params", 0.85, "recipe"),        # only the recipe is within 0.85% on validation
    ("params", 0.95, "variational"),   # within: recipe, variational; most params: variational
    ("bytes", 0.97, "harder"),         # stored: recipe 0.8, harder 0.95 within; harder: 96x
    ("bytes", 0.5, None)])             # nothing that good
def test_at_an_error_the_most_reduced_point_within_it_on_validation(measure, error, expected):
    assert at_error(POINTS, measure, error) == expected


@pytest.mark.parametrize("needs, expected", [
    ({"params": 12}, "recipe"),              # all reach it; the recipe errs least
    ({"bytes": 90}, "harder"),               # harder 0.95 beats variational's 1.2 (stored)
    ({"params": 40, "bytes": 100}, "variational"),
    ({"params": 100}, None)])
def test_at_a_reduction_the_lowest_validation_error_among_those_reaching_it(needs, expected):
    assert at_reduction(POINTS, needs) == expected


def test_goals_are_met_only_by_the_test_error_of_the_point_validation_chose():
    # validation 0.8 chooses the recipe; its test error 0.9 misses a 0.85 goal
    points = {"recipe": rows(0.8, 0.8, 12.5, 43, test=0.9)}
    lines = tables("lenet-5", points)
    (deep_compression,) = [l for l in lines if l.startswith("| <= 0.74% at >= 39x bytes")]
    assert "*recipe*" in deep_compression and deep_compression.endswith("| missed |")
    (bayesian,) = [l for l in lines if l.startswith("| <= 1.0% at >= 771x bytes")]
    assert "no point reaches >= 771x bytes" in bayesian


def test_each_seed_row_shows_the_units_stored():
    lines = tables("lenet-5", {"recipe": rows(0.8, 0.8, 12.5, 43)})
    assert "units stored" in lines[0]
    assert [l for l in lines if l.startswith("| recipe | 1 |") and "| 30-10 |" in l]
