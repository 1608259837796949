"""The package layering holds, and the commands that need no model load no torch.

Layers, each importing only those before it (``core/cli.py``, the composition root that wires
the commands, is the one exception): ``vlab`` (core, incl. ``vlab.training``) <- ``vlab.models``
<- ``vlab.probes`` <- ``vlab.vlm`` <- ``vlab.slurm`` <- ``vlab.analysis`` <- ``vlab.bench``
<- ``vlab.notebooks`` (``vlab.bench`` times every layer below it: the probe step, the models,
``vlab inspect``'s analyses; nothing imports it).
The experiments (``vlab.probes``, ``vlab.vlm``) import the models, never the reverse.
"""

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
FOLDERS = {
    "core": "vlab",
    "models": "vlab.models",
    "probes": "vlab.probes",
    "bench": "vlab.bench",
    "vlm": "vlab.vlm",
    "slurm": "vlab.slurm",
    "analysis": "vlab.analysis",
}
ORDER = [
    "vlab",
    "vlab.models",
    "vlab.probes",
    "vlab.vlm",
    "vlab.slurm",
    "vlab.analysis",
    "vlab.bench",
    "vlab.notebooks",
]
SWEEP = REPO / "tests" / "slurm" / "fixtures" / "sweep-2c5bbbe"


def layer(module: str) -> int:
    matches = [i for i, p in enumerate(ORDER) if module == p or module.startswith(p + ".")]
    return max([0, *matches])


def imports(path: Path) -> list[str]:
    """Every absolute ``vlab`` import in a file, at the top or inside functions."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append(node.module)
        elif isinstance(node, ast.Import):
            found.extend(a.name for a in node.names)
    return [m for m in found if m == "vlab" or m.startswith("vlab.")]


def test_no_package_imports_a_layer_below_it():
    against = []
    for folder, package in FOLDERS.items():
        for path in sorted((REPO / folder).rglob("*.py")):
            rel = path.relative_to(REPO / folder).with_suffix("")
            module = ".".join([package, *rel.parts]).removesuffix(".__init__")
            if path == REPO / "core" / "cli.py":
                continue
            against += [f"{module} -> {m}" for m in imports(path) if layer(m) > layer(module)]
    assert against == []


def test_the_layer_check_sees_an_edge_against_the_layering():
    assert layer("vlab.training.engine") == 0 and layer("vlab.models.vlm.model") == 1
    assert layer("vlab.slurm.spec") > layer("vlab.probes.config") > layer("vlab.models")
    assert layer("vlab.vlm.train") > layer("vlab.models.vlm.model")


@pytest.mark.parametrize(
    "argv",
    [
        ["--help"],
        ["sweep", "list"],
        ["sweep", "show", "cpu-small"],
        ["sweep", "show", "vlm-shapes"],
        ["sweep", "status", "SWEEP"],
        ["report", "SWEEP", "--no-html"],
    ],
    ids=["help", "sweep-list", "sweep-show", "sweep-show-vlm", "sweep-status", "report"],
)
def test_commands_that_need_no_model_import_no_torch(tmp_path, argv):
    if "SWEEP" in argv:
        shutil.copytree(SWEEP, tmp_path / "sweep")
        argv = [str(tmp_path / "sweep") if a == "SWEEP" else a for a in argv]
    code = (
        "import sys\n"
        "from vlab.cli import main\n"
        "try:\n"
        f"    main({argv!r})\n"
        "except SystemExit:\n"
        "    pass\n"
        "heavy = sorted(m for m in ('torch', 'transformers') if m in sys.modules)\n"
        "print('HEAVY', heavy)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=tmp_path
    )
    assert "HEAVY []" in out.stdout, out.stdout[-2000:] + out.stderr[-2000:]


def _module_of(path: Path) -> str:
    for folder, package in FOLDERS.items():
        root = REPO / folder
        if root in path.parents:
            rel = path.relative_to(root).with_suffix("")
            return ".".join([package, *rel.parts]).removesuffix(".__init__")
    raise AssertionError(path)


def import_graph() -> dict[str, set[str]]:
    """module -> the vlab modules it imports (a ``from package import submodule`` counts as
    the submodule), at the top or inside functions."""
    paths = [p for folder in FOLDERS for p in sorted((REPO / folder).rglob("*.py"))]
    modules = {_module_of(p): p for p in paths if p != REPO / "core" / "cli.py"}
    graph: dict[str, set[str]] = {}
    for module, path in modules.items():
        edges = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [f"{node.module}.{a.name}" for a in node.names]
                subs = [n for n in names if n in modules]
                edges.update(subs or [node.module])
            elif isinstance(node, ast.Import):
                edges.update(a.name for a in node.names)
        graph[module] = {m for m in edges if m in modules and m != module}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm): each is
    a set of modules that import each other, directly or through others."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_no_import_cycles_function_level_imports_included():
    assert cycles(import_graph()) == []


def test_the_cycle_check_sees_a_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(graph) == [["a", "b", "c"]]
