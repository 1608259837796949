"""The package layering holds, and the commands that need no model load no torch.

Layers, each importing only those before it (``core/cli.py``, the composition root that wires
the commands, is the one exception): ``vlab`` (core, incl. ``vlab.training``) <- ``vlab.models``
<- ``vlab.probes`` <- ``vlab.slurm`` <- ``vlab.analysis`` <- ``vlab.notebooks``.
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
    "slurm": "vlab.slurm",
    "analysis": "vlab.analysis",
}
ORDER = ["vlab", "vlab.models", "vlab.probes", "vlab.slurm", "vlab.analysis", "vlab.notebooks"]
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


@pytest.mark.parametrize(
    "argv",
    [
        ["--help"],
        ["sweep", "list"],
        ["sweep", "show", "cpu-small"],
        ["sweep", "status", "SWEEP"],
        ["report", "SWEEP", "--no-html"],
    ],
    ids=["help", "sweep-list", "sweep-show", "sweep-status", "report"],
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
