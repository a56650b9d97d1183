"""The sweep's plot holds every published row of every network (a fixed list of 4 markers once
ran out at the LeNets' 5 and 9 rows, at the end of the sweep, whose results were then lost)."""
import matplotlib.image
import pytest

from experiments import papers
from utils.plot_utils import plot_accuracy_vs_compression


@pytest.mark.parametrize("network", ["mlp", *papers.PUBLISHED])
def test_the_sweep_plot_marks_each_published_row_on_its_measure(tmp_path, network, monkeypatch):
    rows = [dict(schedule=schedule, param_reduction=reduction, test_accuracy=0.98,
                 shared_compression=4 * reduction, shared_test_accuracy=0.979)
            for schedule in ("one-shot", "gradual") for reduction in (10.0, 20.0, 50.0)]
    original = dict(rows[0], schedule="original") if network == "mlp" else None
    published = papers.PUBLISHED.get(network, [])
    legends = []
    monkeypatch.setattr("matplotlib.axes.Axes.legend",
                        lambda ax, **kw: legends.append(ax.get_legend_handles_labels()[1]))
    path = tmp_path / "accuracy_vs_compression.png"
    plot_accuracy_vs_compression(rows, 0.98, original, published, network, path)
    assert matplotlib.image.imread(path).shape[:2] == (650, 1300)
    names = {f"{name}: {error}%" for name, error, _, _ in published}
    for labels, measure in zip(legends, ("params", "bytes"), strict=True):
        assert [label for label in labels if label in names] == [
            f"{name}: {error}%" for name, error, kind, _ in published if kind == measure]
