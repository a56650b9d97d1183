"""The repository's layering: imports flow one way, scripts -> experiments -> deploy ->
compression -> training -> networks -> datasets -> utils -> configs, with the `pruning` package
below them all and importing none of them; no script imports another, no module imports a script."""
import ast

import pytest

from tests.conftest import REPO

LAYERS = ["experiments", "deploy", "compression", "training", "networks", "datasets", "utils",
          "configs"]  # top first
SCRIPTS = sorted(p.stem for p in REPO.glob("*.py"))


def imports(path):
    """The top-level names `path` imports (`from a.b import c` -> "a")."""
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module.split(".")[0]
        elif isinstance(node, ast.Import):
            yield from (alias.name.split(".")[0] for alias in node.names)


@pytest.mark.parametrize("layer", LAYERS + ["pruning"])
def test_a_layer_imports_only_the_layers_below_it(layer):
    below = set(LAYERS[LAYERS.index(layer) + 1:]) | {"pruning"} if layer != "pruning" else set()
    paths = [REPO / "configs.py"] if layer == "configs" else sorted((REPO / layer).rglob("*.py"))
    for path in paths:
        ours = {name for name in imports(path) if name in set(LAYERS) | {"pruning", *SCRIPTS}}
        wrong = ours - below - {layer}
        assert not wrong, f"{path.relative_to(REPO)} imports {sorted(wrong)}"


def test_compression_is_numpy_in_numpy_out():
    """The storage formats need no framework: nothing of Keras, TensorFlow, JAX or PyTorch, and
    none of the folders that would bring them."""
    for path in sorted((REPO / "compression").rglob("*.py")):
        frameworks = set(imports(path)) & {"keras", "tensorflow", "jax", "torch", "training",
                                           "networks", "deploy", "pruning"}
        assert not frameworks, f"{path.relative_to(REPO)} imports {sorted(frameworks)}"


@pytest.mark.parametrize("script", [s for s in SCRIPTS if s != "configs"])
def test_no_script_imports_another_script(script):
    assert not set(imports(REPO / f"{script}.py")) & set(SCRIPTS) - {"configs"}


@pytest.mark.parametrize("script", [s for s in SCRIPTS if s != "configs"])
def test_every_scripts_main_is_a_short_story(script):
    """parse -> load -> run -> save -> report, the work in named functions: at most 60 lines."""
    (main,) = [node for node in ast.parse((REPO / f"{script}.py").read_text()).body
               if isinstance(node, ast.FunctionDef) and node.name == "main"]
    assert main.end_lineno - main.lineno + 1 <= 60


PUBLISHED = sorted(str(d.relative_to(REPO)) for root in ("pics", "results", "benchmarks/results")
                   for d in [REPO / root, *(REPO / root).rglob("*")] if d.is_dir())


@pytest.mark.parametrize("folder", PUBLISHED)
def test_every_committed_result_is_vouched_for_by_its_folders_record(folder):
    """The scripts replace only what the folder's record (utils/files.py MANIFEST) says this
    project wrote, as it is: a committed file missing from it, or changed since, would make
    ./run_experiments.sh on a fresh clone refuse to write its own figures."""
    from utils.files import check_publishable
    path = REPO / folder
    names = sorted(p.name for p in path.iterdir() if p.is_file() and not p.name.startswith("."))
    check_publishable(names, path, folder)  # the check every publishing script makes first
