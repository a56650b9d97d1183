"""Our pruning next to the papers': operating points over several seeds, mean +- std, as tables.

    python compare_with_papers.py --network lenet-5              # seeds 123 124 125, every point
    python compare_with_papers.py --network lenet-300-100 --points recipe variational
    python compare_with_papers.py --network lenet-300-100 --seeds 123 124

An operating point is one pruning recipe (experiments/papers.py POINTS: "recipe", the
network's own, and others such as a higher sparsity or sparse variational dropout). For every
seed, runs train_network_dense.py once into <runs-dir>/<seed>/dense (a point of papers.DENSE: its
own, with its flags, into dense-<point>), then prune_network.py ->
deploy_pruned_model.py of each point into <runs-dir>/<seed>/{pruned,sparse} (the recipe) or
{pruned,sparse}-<point>; a point that prunes twice (papers.INSIDE: the compound recipe) runs
its first prune_network.py into pruned-<point>-groups and its second inside that one's shrunk
network (--structured-dir); a stage whose output is already there is read, not rerun (delete its
folder to rerun it); a stage whose record is of another network, seed, data, --quick or point's
flags, or damaged, is one error line, never read as this one's. Each point's rows are kept, as
each completes, in <results-dir>/papers_comparison_seeds.json, committed with the table: a point
of a seed whose folders are all gone (a new checkout) is read from there if it was run with the
point's flags of today, so that the seeds of a long comparison can run in different sittings
(--fresh: rerun it instead; --fresh POINT...: only those points, e.g. after a change to their
code). Then reports:
  1. each point, per seed and as mean +- sample std: the test error of the dense network, of the
     pruned one (float32) and of the stored one, after trained quantization, as
     shared-5bit-huffman (Deep Compression's format) and, in the rows "<point>, mixed", as
     shared-mixed-huffman (each layer's code width chosen on the validation split: fewer bytes,
     some accuracy): every point in both, the choices below made among them on validation;
     the parameter reduction (the unpruned network's weights / non-zeros, Han et al. 2015's
     measure), the compression (dense float32 bytes / stored bytes, Deep Compression's) and
     the units (or channels) of each layer as stored, its dead ones dropped;
  2. each published row (configs.NETWORKS) beside our point *at its error* (the most reduced
     point whose mean validation error is at most the row's) and *at its reduction* (the point
     of lowest mean validation error that reduces at least as much): chosen on the validation
     split, then its test error, read once per stage, reported. A row counting parameters is
     compared with the pruned float32 network, one counting bytes with the stored one;
  3. the network's goals, met or missed, chosen the same way.
Writes results/<network>/papers_comparison.md at the end (--quick: into the runs' folder,
saved_models/<network>/seeds-quick/, never results/). --quick is a smoke test of the stages, not
of the points' lengths: each runs the stages' --quick epoch, its own schedule left out.
"""
import json
import signal
import statistics
import subprocess
import sys

import configs
from compression.formats import MIXED
from experiments import papers
from utils import cli, flags
from utils.errors import CheckpointError
from utils.files import publish, published, write_json
from utils.records import read_record, record_facts

TABLE = "papers_comparison.md"  # into --results-dir
SEEDS = "papers_comparison_seeds.json"  # into --results-dir: {seed: {point: its entry}}
ENTRY = {"flags", "inside", "rows"}  # a point's entry in SEEDS: what ran, and its rows (and
# "dense", the flags of its own dense network, for a point of papers.DENSE)
ROW = {"seed", "dense_error", "pruned_error", "pruned_validation_error", "stored_error",
       "stored_validation_error", "params", "bytes", "stored_bytes", "stored_units",
       "fine_tune_seconds"}
RECIPE = "recipe"  # the network's own recipe: its folders keep the plain names pruned/, sparse/
STORED = {configs.BEST_FORMAT: "", MIXED: ", mixed"}  # the stored formats, each point's name's tail
# what a stage's record holds of configs.TRAINING without flags; a record older than a field ran
# with its default (no moved images before --shift)
TRAINING_DEFAULTS = {name: s.default for name, s in configs.TRAINING.items()}
SCHEDULE = ("--epochs", "--lr-boundaries", "--lr-values")  # a point's, left out by --quick


def smoke(point_flags):
    """`point_flags` for a --quick run: without the point's schedule (SCHEDULE, each with its
    values), so that the stage's --quick one runs, one epoch, not the point's 30 or 200 (hours
    on 2 cores): a smoke test of every point takes minutes."""
    kept, skipping = [], False
    for token in point_flags:
        if token.startswith("--"):
            skipping = token in SCHEDULE
        if not skipping:
            kept.append(token)
    return kept


def folders(point):
    """(pruned folder, sparse folder) of a point, inside its seed's folder."""
    return ("pruned", "sparse") if point == RECIPE else (f"pruned-{point}", f"sparse-{point}")


def run_stage(script, seed, network, out, args, expected=None):
    """One stage into `out`, unless its record (config.json) is there; its results. `args` are
    the stage's flags (--quick among them or not); `expected`, {field: value} its record must
    hold besides the network, the seed, --quick and MNIST."""
    if not (out / "config.json").is_file():
        print(f"seed {seed}: {script} -> {out}", flush=True)
        stage = subprocess.Popen([sys.executable, str(configs.repo_path(script)), "--network",
                                  network, "--seed", str(seed), *args, "--model-dir", str(out)])
        try:
            code = stage.wait()
        except BaseException:  # Ctrl-C, kill: the stage ends as it would alone, cleaning up
            stage.send_signal(signal.SIGTERM)  # (subprocess.run's SIGKILL would leave its
            stage.wait()  # working folder behind)
            raise
        if code:
            raise ValueError(f"seed {seed}: {script} failed (exit status {code}; its error is "
                             f"above); the stages before it are kept and not rerun")
    return read_results(out, script, dict(network=network, seed=seed, quick="--quick" in args,
                                          data_source="MNIST", **(expected or {})))


def read_results(out, script, expected):
    """The results of the record in `out`, refused with one line unless it is a record of
    `script` whose config holds `expected` ({field: value}): a folder of another network, seed,
    data, --quick or point is never read as this one's."""
    try:
        _, record = read_record(out, script)
        config, results = record["config"], record.get("results")
        if not isinstance(results, dict) or "test_accuracy" not in results:
            raise CheckpointError(f"{out}/config.json holds no results of {script}")
        if script == "deploy_pruned_model.py" and ("unpruned_weights" not in results or
                                                   "units" not in results.get("formats", {})
                                                   .get(MIXED, {})):
            raise CheckpointError(f"{out}/config.json was written by an older version of "
                                  f"{script}, without {MIXED}, the unpruned weights' count or "
                                  f"the units stored (its dead units were stored)")
    except CheckpointError as e:
        raise CheckpointError(f"{e} (here: delete {out}/, and this script reruns the "
                              f"stage)") from None
    recorded = {**TRAINING_DEFAULTS,
                **{k: tuple(v) if isinstance(v, list) else v for k, v in config.items()},
                **record_facts(record)}
    wrong = {k: recorded.get(k) for k, v in expected.items() if recorded.get(k) != v}
    if wrong:
        want = {k: expected[k] for k in wrong}
        raise CheckpointError(f"{out}/ holds a run of {wrong}, not of {want}: delete it to rerun "
                              f"the stage, or choose another --runs-dir")
    return results


def read_seeds(path, network, quick):
    """{seed: {point: {"flags", "inside", "rows"}}} kept in `path` ({} without it), refused in one
    line unless it is whole and of this network and --quick."""
    if not path.is_file():
        return {}
    try:
        kept = json.loads(path.read_text())
        facts = {k: kept[k] for k in ("network", "quick")}
        seeds = kept["seeds"]
        if not all(set(e) - {"dense"} == ENTRY and all(set(r) == ROW for r in e["rows"].values())
                   for p in seeds.values() for e in p.values()):
            raise ValueError
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        raise CheckpointError(f"{path} is damaged or unreadable: move it away (its points are "
                              f"then rerun, or read from their folders)") from None
    if facts != dict(network=network, quick=quick):
        raise CheckpointError(f"{path} holds rows of {facts}, not of "
                              f"{dict(network=network, quick=quick)}: choose another "
                              f"--results-dir")
    return seeds


def run_seed(network, seed, folder, data_flags, points, kept, keep):
    """The dense stage once (if a point runs), then prune and deploy for each point, or its
    rows from `kept` ({point: entry} of SEEDS) where its folders are all gone and it ran with
    the flags of today; each point's entry passed to `keep(point, entry)` as it completes.
    {point, or "<point>, mixed" (stored as shared-mixed-huffman): a row of numbers}."""
    rows, dense, quick = {}, None, "--quick" in data_flags
    own_dense = papers.DENSE.get(network, {})
    for point in points:
        pruned_dir, sparse_dir = (folder / f for f in folders(point))
        point_flags = papers.POINTS[network][point]
        inside = papers.INSIDE.get(network, {}).get(point)
        if quick:
            point_flags, inside = smoke(point_flags), inside and smoke(inside)
        first_dir = folder / f"pruned-{point}-groups" if inside else pruned_dir
        ran = dict(flags=point_flags, inside=inside, dense=own_dense.get(point))
        entry = {k: v for k, v in ran.items() if k != "dense" or v}
        earlier = kept.get(point, {})
        if not any(f.exists() for f in (first_dir, pruned_dir, sparse_dir)) and \
                {k: earlier.get(k) for k in ran} == ran and \
                {n: r["seed"] for n, r in earlier["rows"].items()} == {
                    point + tail: seed for tail in STORED.values()}:
            print(f"seed {seed}: {point}: its rows as kept in {SEEDS} (its folders are gone)")
            rows.update(earlier["rows"])
            continue
        dense_flags = ran["dense"] or []  # a point of papers.DENSE: its own dense network
        dense_dir = folder / (f"dense-{point}" if dense_flags else "dense")
        start = run_stage("train_network_dense.py", seed, network, dense_dir,
                          [*data_flags, *dense_flags], expected={
                              **TRAINING_DEFAULTS, **flags.settings(dense_flags, configs.TRAINING)})
        dense = dense if dense_flags else start
        pruned = run_stage("prune_network.py", seed, network, first_dir, [
            *data_flags, *point_flags, "--dense-dir", str(dense_dir), "--pics-dir",
            str(folder / "pics" / point)], expected=flags.settings(point_flags))
        if inside:  # pruned again, inside the first run's shrunk network; both runs' time
            second = run_stage("prune_network.py", seed, network, pruned_dir, [
                *data_flags, *inside, "--structured-dir", str(first_dir), "--pics-dir",
                str(folder / "pics" / f"{point}-inside")], expected=dict(
                    flags.settings(inside), shrunk_from=str(first_dir.resolve())))
            pruned = dict(second, fine_tune_seconds=pruned["fine_tune_seconds"]
                          + second["fine_tune_seconds"])
        sparse = run_stage("deploy_pruned_model.py", seed, network, sparse_dir,
                           [*data_flags, "--pruned-dir", str(pruned_dir)])
        entry["rows"] = {point + tail: seed_row(seed, start, pruned, sparse, fmt)
                         for fmt, tail in STORED.items()}
        keep(point, entry)
        rows.update(entry["rows"])
    if dense:  # rows kept from another sitting may have pruned another dense network
        error = 100 * (1 - dense["test_accuracy"])
        plain = {n: r for n, r in rows.items() if n.removesuffix(STORED[MIXED]) not in own_dense}
        for point, kept_error in other_dense(plain, error).items():
            print(f"warning: seed {seed}: {point} was pruned from a dense network of "
                  f"{kept_error:.2f}% test error (its rows as kept in {SEEDS}), not from "
                  f"{folder / 'dense'}/ ({error:.2f}%): each row shows its own",
                  file=sys.stderr)
    return rows


def other_dense(rows, error):
    """{point: its dense error} of the rows ({name: row}) whose dense network's test error is
    not `error`, the one this sitting trained or read: a seed's points pruned from different
    dense networks (retrained after an interruption, say) are each shown with their own."""
    return {name: r["dense_error"] for name, r in rows.items()
            if r["dense_error"] != error and not name.endswith(STORED[MIXED])}


def seed_row(seed, dense, pruned, sparse, fmt):
    stored = sparse["formats"][fmt]
    weights = sparse["unpruned_weights"]  # the shrunk network's would flatter a compound point
    return dict(seed=seed, dense_error=100 * (1 - dense["test_accuracy"]),
                pruned_error=100 * (1 - pruned["test_accuracy"]),
                pruned_validation_error=100 * (1 - pruned["history"][-1]["val_accuracy"]),
                stored_error=100 * (1 - stored["test_accuracy"]),
                stored_validation_error=100 * (1 - stored["validation_accuracy"]),
                params=weights / pruned["nonzero_weights"], bytes=stored["compression"],
                stored_bytes=stored["bytes"], stored_units=stored["units"],
                fine_tune_seconds=pruned["fine_tune_seconds"])


def mean(rows, key):
    return statistics.mean(r[key] for r in rows)


def mean_std(rows, key, digits=2):
    values = [r[key] for r in rows]
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.{digits}f} +- {std:.{digits}f}"


# what each measure is compared on: a row counting parameters, the pruned float32 network; one
# counting bytes, the stored one
ERROR = {"params": "pruned_error", "bytes": "stored_error"}
VALIDATION = {"params": "pruned_validation_error", "bytes": "stored_validation_error"}


def at_error(points, measure, error):
    """The point of largest mean `measure` whose mean validation error is <= `error`, or None."""
    within = [p for p, rows in points.items() if mean(rows, VALIDATION[measure]) <= error]
    return max(within, key=lambda p: mean(points[p], measure), default=None)


def at_reduction(points, needs):
    """The point of lowest mean validation error (of the first measure in `needs`) among those
    whose mean reductions reach `needs` ({measure: at least}), or None."""
    key = VALIDATION[next(iter(needs))]
    reaching = [p for p, rows in points.items()
                if all(mean(rows, m) >= v for m, v in needs.items())]
    return min(reaching, key=lambda p: mean(points[p], key), default=None)


def describe(points, point, measure):
    """'1.53 +- 0.07% at 45.0 +- 0.3x bytes (12.5x params), *point*' for a chosen point."""
    rows, other = points[point], "bytes" if measure == "params" else "params"
    return (f"{mean_std(rows, ERROR[measure])}% at {mean_std(rows, measure, 1)}x {measure} "
            f"({mean(rows, other):.1f}x {other}), *{point}*")


def tables(network, points):
    """Markdown: every point's seeds and mean, the published rows beside ours, the goals."""
    lines = [f"| {network} point | seed | dense error | pruned error | stored error "
             f"({configs.BEST_FORMAT}; *, mixed*: {MIXED}) | params | bytes | units stored | "
             f"fine-tuning |", "|" + "---|" * 9]
    for point, rows in points.items():
        for r in rows:
            lines.append(f"| {point} | {r['seed']} | {r['dense_error']:.2f}% | "
                         f"{r['pruned_error']:.2f}% | {r['stored_error']:.2f}% | "
                         f"{r['params']:.1f}x | {r['bytes']:.1f}x | "
                         f"{'-'.join(map(str, r['stored_units'].values()))} | "
                         f"{r['fine_tune_seconds']:.0f} s |")
        label = "mean +- std" if len(rows) > 1 else "one seed"
        lines.append(f"| **{point}** | **{label}** | {mean_std(rows, 'dense_error')}% | "
                     f"{mean_std(rows, 'pruned_error')}% | **{mean_std(rows, 'stored_error')}%** | "
                     f"{mean_std(rows, 'params', 1)}x | **{mean_std(rows, 'bytes', 1)}x** | | |")
    lines += ["", "| published | its error at its reduction | ours at its error | ours at its "
              "reduction |", "|---|---|---|---|"]
    for name, error, measure, reduction in papers.PUBLISHED[network]:
        point = at_error(points, measure, error)
        if point is None:  # say how close the best came
            best = min(points, key=lambda p: mean(points[p], VALIDATION[measure]))
            ours = (f"none (the lowest validation error: "
                    f"{mean(points[best], VALIDATION[measure]):.2f}%, *{best}*)")
        else:
            ours = describe(points, point, measure)
        point = at_reduction(points, {measure: reduction})
        if point is None:
            most = max(points, key=lambda p: mean(points[p], measure))
            further = f"none (the most: {mean(points[most], measure):.1f}x, *{most}*)"
        else:
            further = describe(points, point, measure)
        lines.append(f"| {name} | {error}% at {reduction}x {measure} | {ours} | {further} |")
    goals = papers.GOALS[network]
    if goals:
        lines += ["", "| goal | ours, chosen on validation | met |", "|---|---|---|"]
    for error, needs in goals:
        point = at_reduction(points, needs)
        measure = next(iter(needs))
        want = " and ".join(f">= {v}x {m}" for m, v in needs.items())
        if point is None:
            lines.append(f"| <= {error}% at {want} | no point reaches {want} | missed |")
            continue
        test = mean(points[point], ERROR[measure])
        lines.append(f"| <= {error}% at {want} | {describe(points, point, measure)} | "
                     f"{'met' if test <= error else 'missed'} |")
    return lines


def main():
    p = cli.Parser(__doc__)
    p.add_argument("--network", choices=list(papers.PUBLISHED), required=True)
    p.add_argument("--seeds", type=cli.seed, nargs="+", default=[123, 124, 125])
    p.add_argument("--points", nargs="+", metavar="POINT",
                   help="which of the network's operating points to run and report "
                        "(experiments/papers.py POINTS; default all)")
    p.add_argument("--runs-dir", type=cli.path,
                   help="where the seeds' checkpoints go (default saved_models/<network>/seeds)")
    p.add_argument("--results-dir", type=cli.path,
                   help="where the table goes (default results/<network>/; --quick: the "
                        "runs' folder)")
    p.add_argument("--data-dir", type=cli.path, help="folder with MNIST (see the stages' --help)")
    p.add_argument("--quick", action="store_true",
                   help="smoke test: every stage --quick, one epoch, the points' own "
                        "schedules left out (into saved_models/<network>/seeds-quick, the "
                        "table there too); never writes results/")
    p.add_argument("--fresh", nargs="*", metavar="POINT",
                   help=f"rerun a point whose folders are gone instead of reading its rows "
                        f"from <results-dir>/{SEEDS}: the points named, or with none every one")
    args = p.parse_args()
    known = list(papers.POINTS[args.network])
    chosen = args.points or known
    fresh = known if args.fresh == [] else args.fresh or []
    for flag, names in (("--points", chosen), ("--fresh", fresh)):
        unknown = [q for q in names if q not in known]
        if unknown:
            raise ValueError(f"{flag}: {unknown} are not points of {args.network}: {known}")
    runs = args.runs_dir or configs.repo_path(
        f"saved_models/{args.network}/seeds" + "-quick" * args.quick)
    results = cli.publish_dir(args, "--results-dir",
                              configs.network_folder("results", args.network), runs)
    data_flags = ["--quick"] * args.quick + (["--data-dir", str(args.data_dir)] if args.data_dir
                                             else [])

    with published({"--results-dir": (results, [TABLE, SEEDS])}, "papers_comparison") as out:
        kept = read_seeds(results / SEEDS, args.network, args.quick)  # under the lock

        def write():  # the file the end publishes too: without it, publishing would remove it
            write_json(out / SEEDS, dict(network=args.network, quick=args.quick, seeds=kept))

        def keep(seed, point, entry):  # published at once: nothing lost to an interruption
            kept.setdefault(str(seed), {})[point] = entry
            write()
            publish([SEEDS], out, results, "--results-dir")

        write()
        points = {q + tail: [] for q in chosen for tail in STORED.values()}
        for seed in args.seeds:
            for point, row in run_seed(
                    args.network, seed, runs / str(seed), data_flags, chosen,
                    {q: e for q, e in kept.get(str(seed), {}).items() if q not in fresh},
                    lambda point, entry: keep(seed, point, entry)).items():
                points[point].append(row)
        lines = tables(args.network, points)
        (out / TABLE).write_text("\n".join(lines) + "\n")
    print(*lines, sep="\n")
    print(f"wrote {results}/papers_comparison.md")


if __name__ == "__main__":
    cli.run(main)
