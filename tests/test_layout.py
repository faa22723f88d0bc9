"""The package's shape: imports point down the layers, and ``import widelimit`` stays light."""

import ast
import pathlib
import re
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1] / "widelimit"
# core → wide → finite → sae → analysis → top (io, datasets, plot, cli)
LAYERS = {"_core": 0, "_wide": 1, "_finite": 2, "_sae": 3, "_analysis": 4}
TOP = {"io": 5, "datasets": 5, "plot": 6, "cli": 8}  # cli uses the public API


def _layer(parts: tuple[str, ...]) -> int:
    head = parts[0]
    if head in LAYERS:
        return LAYERS[head]
    return TOP.get(head.removesuffix(".py"), 8)


def _imports(path: pathlib.Path):
    """(layer of the importing module, layer of each package-internal module it imports)."""
    rel = path.relative_to(ROOT).parts
    package = rel[:-1]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level > 0:
            base = package[: len(package) - (node.level - 1)]
            target = base + tuple((node.module or "").split(".")) if node.module else base
            names = [target] if node.module else [base + (a.name,) for a in node.names]
            for t in names:
                t = tuple(p for p in t if p)
                if t:
                    yield node.lineno, t
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("widelimit"):
            yield node.lineno, tuple(node.module.split(".")[1:]) or ("__init__",)
        elif isinstance(node, ast.Import):
            for a in node.names:
                if a.name.startswith("widelimit"):
                    yield node.lineno, tuple(a.name.split(".")[1:]) or ("__init__",)


MODULES = sorted(p for p in ROOT.rglob("*.py") if p.name != "__init__.py" or p.parent != ROOT)


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(ROOT)))
def test_imports_point_down(path):
    own = _layer(path.relative_to(ROOT).parts)
    for line, target in _imports(path):
        assert _layer(target) <= own, (
            f"{path.relative_to(ROOT)}:{line} imports {'.'.join(target)}, an upper layer"
        )


def test_no_flat_private_modules():
    """Implementation lives in the layer folders; the top holds only the optional layers."""
    flat = {p.name for p in ROOT.glob("*.py")}
    assert flat <= {"__init__.py", "io.py", "datasets.py", "plot.py", "cli.py"}, flat


def test_import_is_light():
    """``import widelimit`` pulls in no plotting, CLI or scikit-learn code."""
    code = (
        "import sys, widelimit\n"
        "heavy = [m for m in ('matplotlib', 'typer', 'rich', 'sklearn', 'safetensors') "
        "if m in sys.modules]\n"
        "print(','.join(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"import widelimit loaded {out.stdout.strip()}"


def test_dependency_floors_are_the_tested_ones():
    """pyproject's lower bounds are exactly the versions ``make test-floors`` installs and runs."""
    import re

    import tomllib

    project = pathlib.Path(__file__).resolve().parents[1]
    deps = tomllib.loads((project / "pyproject.toml").read_text())["project"]["dependencies"]
    floors = dict(re.match(r"([\w-]+)>=([\w.]+)$", d).groups() for d in deps)
    pins = dict(
        line.split("==")
        for line in (project / ".ci" / "floors.txt").read_text().split()
        if "==" in line
    )
    assert floors == {k: v for k, v in pins.items() if k != "jaxlib"}
    assert pins["jaxlib"] == pins["jax"]


def test_estimator_without_scikit_learn_is_a_clear_import_error():
    code = (
        "import sys; sys.modules['sklearn'] = None\n"
        "import widelimit\n"
        "try:\n    widelimit.DictionaryLearner\n"
        "except ImportError as e:\n    print(e)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "pip install 'widelimit[sklearn]'" in out.stdout, out.stdout + out.stderr


NOTEBOOKS = sorted((ROOT.parent / "notebooks").glob("*.ipynb"))


def test_notebooks_state_their_claim_and_functions_and_carry_no_outputs():
    import json

    names = [p.stem for p in NOTEBOOKS]
    for n in ("01_wide_limit", "02_optimality_conditions", "03_splitting_toward_rays",
              "04_dense_features_1d", "05_real_activations", "06_your_sae"):  # fmt: skip
        assert n in names, n
    import widelimit as wl

    for path in NOTEBOOKS:
        nb = json.loads(path.read_text())
        first = nb["cells"][0]
        text = "".join(first["source"])
        assert first["cell_type"] == "markdown" and "**Claim" in text, path.name
        assert "**Functions" in text, path.name
        for name in re.findall(r"`(?:wl\.)?([a-z_]+)`", text.split("**Functions", 1)[1]):
            if name.startswith(("plot_", "datasets")) or "." in name:
                continue
            assert hasattr(wl, name) or hasattr(wl.datasets, name), (path.name, name)
        assert "assert" in "".join("".join(c["source"]) for c in nb["cells"]), path.name
        for c in nb["cells"]:
            assert not c.get("outputs"), f"{path.name}: outputs are not stripped"


def test_readme_benchmark_tables_are_generated_from_the_results_json():
    """``benchmarks/readme_tables.py --check``: the README's marked tables equal what the JSON in
    benchmarks/results/ renders to (so they cannot drift from the measurements)."""
    res = subprocess.run(
        [sys.executable, str(ROOT.parent / "benchmarks" / "readme_tables.py"), "--check"],
        capture_output=True,
        text=True,
    )
    assert res.returncode == 0, "README tables differ from benchmarks/results: run readme_tables.py"
    readme = (ROOT.parent / "README.md").read_text()
    for name in ("wide_scaling", "width_study", "code_solver", "finite_scaling", "architectures",
                 "pair_hull_scaling"):  # fmt: skip
        block = readme.split(f"<!-- table:{name} -->")[1].split(f"<!-- /table:{name} -->")[0]
        assert block.count("\n|") >= 3, name  # rendered, not empty
