"""Render a report notebook over a sweep: papermill on a real kernel, then self-contained HTML.

``SWEEP_DIR/report.ipynb``, ``report.html`` and ``figures/`` are rendered into a hidden
temporary directory inside the sweep and moved into place only when everything succeeded, so a
failed or interrupted render never leaves a half-written report (a failed notebook is kept as
``report.failed.ipynb`` for its traceback). Those are the default template's names; any other
template writes ``<template>.ipynb``, ``<template>.html``, ``figures-<template>/`` and
``<template>.failed.ipynb`` (``<template>``: its name, or the stem of its file), so reports of
several templates live side by side in one sweep. Without ``--template`` a VLM sweep (sweep.json
kind "vlm") gets the ``vlm`` template (``vlm.html``), a finetune sweep (kind "vlm-finetune") the
``finetune`` template (``finetune.html``), any other sweep the probe report.

The kernel is always the interpreter running ``vlab`` (``sys.executable``), started through
:class:`ThisPythonKernelManager`, whatever kernelspecs a user or system directory holds: the
report imports this very ``vlab``. The executed notebook still names the standard ``python3``
kernel, so JupyterLab started from the same environment re-runs it as is.
"""

from __future__ import annotations

import ast
import json
import os
import shutil
import sys
import tempfile
import warnings
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from jupyter_client.kernelspec import KernelSpec
from jupyter_client.manager import KernelManager

from vlab.analysis.load import Sweep, load_sweep
from vlab.analysis.vlm import VLM_KIND, load_vlm_sweep, summary_line, sweep_kind
from vlab.errors import VlabError
from vlab.experiment import KINDS, experiment
from vlab.rundir import STATES

TEMPLATES_PACKAGE = "vlab.notebooks"
DEFAULT_TEMPLATE = "probe_report"
VLM_TEMPLATE = "vlm"  # the default for a VLM sweep (sweep.json kind "vlm")
FINETUNE_TEMPLATE = "finetune"  # the default for a finetune sweep (kind "vlm-finetune")
KERNEL_NAME = "python3"
# Parameters the report sets itself; a template must declare them in its `parameters` cell.
RESERVED = ("sweep_dir", "figures_dir")

# The lab HTML template without the scripts it loads from a CDN (require.js, MathJax,
# Mermaid): the report must open offline. Figures are embedded as base64 by nbconvert.
_HTML_TEMPLATE = """{%- extends 'index.html.j2' -%}
{%- block html_head_js_requirejs -%}{%- endblock html_head_js_requirejs -%}
{%- block html_head_js_mathjax -%}{%- endblock html_head_js_mathjax -%}
{%- block html_head_js_mermaidjs -%}{%- endblock html_head_js_mermaidjs -%}
"""


class ThisPythonKernelManager(KernelManager):
    """Starts an IPython kernel with this process's Python, ignoring installed kernelspecs.

    Where jupyter_client and pyzmq support it, the local connection is CurveZMQ-encrypted.
    """

    def __init__(self, **kwargs: Any):
        import zmq

        if self.class_traits().get("transport_encryption") is not None and zmq.has("curve"):
            kwargs.setdefault("transport_encryption", "auto")
        super().__init__(**kwargs)

    @property
    def kernel_spec(self) -> KernelSpec:
        if self._kernel_spec is None:
            from ipykernel.kernelspec import RESOURCES, get_kernel_dict

            spec = get_kernel_dict(python_arguments=["-Xfrozen_modules=off"])
            self._kernel_spec = KernelSpec(resource_dir=RESOURCES, **spec)
        return self._kernel_spec


@dataclass(frozen=True)
class ReportPaths:
    notebook: Path
    html: Path | None
    figures: Path
    failed: Path  # where a notebook that failed is kept for its traceback


def report_paths(root: Path, template: str, html: bool = True) -> ReportPaths:
    """Where the report of ``template`` (a shipped name or an .ipynb path) goes in ``root``:
    ``report.*`` and ``figures/`` for the default template, ``<name>.*`` and
    ``figures-<name>/`` for any other (``<name>``: the template's file stem)."""
    name = Path(template).name.removesuffix(".ipynb")
    if name == DEFAULT_TEMPLATE:
        base, figures = "report", "figures"
    else:
        base, figures = name, f"figures-{name}"
    return ReportPaths(
        root / f"{base}.ipynb",
        root / f"{base}.html" if html else None,
        root / figures,
        root / f"{base}.failed.ipynb",
    )


def available_templates() -> list[str]:
    """Names of the templates shipped in ``vlab.notebooks``."""
    root = resources.files(TEMPLATES_PACKAGE)
    return sorted(p.name[: -len(".ipynb")] for p in root.iterdir() if p.name.endswith(".ipynb"))


def resolve_template(name: str, stack: ExitStack) -> Path:
    """A shipped template by name, or a path to any ``.ipynb`` file."""
    if name.endswith(".ipynb") or os.sep in name:
        path = Path(name).expanduser()
        if not path.is_file():
            raise VlabError(f"--template {name}: no such notebook file")
        return path.resolve()
    if name not in available_templates():
        raise VlabError(
            f"--template {name!r} is not a report template "
            f"(available: {', '.join(available_templates())}; or give a path to an .ipynb)"
        )
    ref = resources.files(TEMPLATES_PACKAGE) / f"{name}.ipynb"
    return stack.enter_context(resources.as_file(ref))


def parse_value(raw: str) -> Any:
    """A ``-p`` value: JSON (``0.9``, ``null``, ``true``, ``[1, 2]``), a Python literal
    (``None``, ``True``), or else the string itself."""
    try:
        return json.loads(raw)
    except json.JSONDecodeError:
        pass
    except (ValueError, RecursionError) as e:  # a 5,000-digit number, [[[[...]]]]
        said = str(e) or "nested too deeply"
        raise VlabError(f"-p value {raw[:40]!r}: cannot be read ({said[:200]})") from None
    try:
        return ast.literal_eval(raw)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return raw


def template_parameters(path: Path) -> dict[str, Any]:
    """The parameters declared in the template's cell tagged ``parameters`` (name -> papermill's
    description: type, default, comment)."""
    import nbformat
    from papermill.translators import PythonTranslator

    try:
        with warnings.catch_warnings():  # nbformat's warnings of a user's own notebook
            warnings.simplefilter("ignore")
            nb = nbformat.read(path, as_version=4)
        cells = list(nb.cells)
    except (OSError, ValueError, RecursionError) as e:
        raise VlabError(f"{path}: not a readable notebook ({e})") from e
    except (AttributeError, TypeError, KeyError):  # JSON, but not a notebook's shape
        raise VlabError(f"{path}: not a notebook (JSON of another shape)") from None
    cells = [c for c in cells if "parameters" in c.get("metadata", {}).get("tags", [])]
    if not cells:
        raise VlabError(f"{path}: no cell tagged 'parameters'; it is not a report template")
    params = {p.name: p for p in PythonTranslator.inspect(cells[0])}
    missing = [p for p in RESERVED if p not in params]
    if missing:
        raise VlabError(f"{path}: its parameters cell does not define {', '.join(missing)}")
    return params


def check_parameters(given: dict[str, Any], declared: dict[str, Any]) -> None:
    """Refuse parameters the template does not declare, and the ones vlab sets itself."""
    for key in given:
        if key in RESERVED:
            raise VlabError(f"-p {key} is set by vlab report itself; it cannot be overridden")
        if key not in declared:
            known = ", ".join(k for k in declared if k not in RESERVED)
            raise VlabError(f"-p {key}: the template has no such parameter (it has: {known})")
        default = _literal(declared[key].default)
        number = (int, float)
        if isinstance(default, number) and not isinstance(default, bool):
            if isinstance(given[key], bool) or not isinstance(given[key], number):
                raise VlabError(
                    f"-p {key} expects a number (default {declared[key].default}), "
                    f"got {given[key]!r}"
                )


def _literal(source: str) -> Any:
    """The value of a parameter's default as written in the template, if it is a literal."""
    try:
        return ast.literal_eval(source)
    except (ValueError, SyntaxError):
        return None


def summary(sweep: Sweep) -> str:
    """One line: how many runs in which state."""
    counts = sweep.runs["state"].value_counts()
    order = [s for s in STATES if s in counts] + sorted(set(counts.index) - set(STATES))
    states = ", ".join(f"{counts[s]} {s}" for s in order)
    n_warn = len(sweep.warnings)
    return f"sweep {sweep.name!r}: {len(sweep.runs)} runs ({states}), {n_warn} warnings"


def _remove_stale_work_dirs(root: Path) -> None:
    """Delete the ``.report-<pid>-*`` work folders of reports that were killed (their process
    is gone); a report still running in another process keeps its folder."""
    from vlab.process import pid_alive

    for work in root.glob(".report-*"):
        parts = work.name.split("-")
        pid = int(parts[1]) if len(parts) > 2 and parts[1].isdigit() else None
        if work.is_dir() and (pid is None or not pid_alive(pid)):
            shutil.rmtree(work, ignore_errors=True)


def kind_template(kind: str) -> str:
    """The report template of run kind ``kind`` (its experiment's ``report_template``); an
    unknown kind gets the probe report, which names what it cannot read."""
    return experiment(kind).report_template if kind in KINDS else DEFAULT_TEMPLATE


def default_template(sweep_dir: str | Path) -> str:
    """The template a sweep gets without ``--template``: its kind's (sweep.json's, or a folder
    of VLM or finetune run directories), else the probe report."""
    return kind_template(sweep_kind(sweep_dir))


def _load(sweep_dir: str | Path, template: str) -> tuple[Path, str, str]:
    """(root, name, summary line) of the sweep, loaded as ``template`` reads it; fails fast,
    in one line, on a directory that is no sweep and on a template of the other kind."""
    if template == VLM_TEMPLATE:
        vlm_sweep = load_vlm_sweep(sweep_dir, locations=False)  # names a probe sweep as such
        return vlm_sweep.root, vlm_sweep.name, summary_line(vlm_sweep)
    if template == FINETUNE_TEMPLATE:
        from vlab.analysis import finetune

        ft_sweep = finetune.load_finetune_sweep(sweep_dir)  # names another kind as such
        return ft_sweep.root, ft_sweep.name, finetune.summary_line(ft_sweep)
    kind = sweep_kind(sweep_dir)
    if template == DEFAULT_TEMPLATE and kind_template(kind) != DEFAULT_TEMPLATE:
        title = "VLM" if kind == VLM_KIND else f"{kind}"
        raise VlabError(
            f"{sweep_dir} is a {title} sweep: the probe report has nothing to show for it; drop "
            f"--template (its default is {kind_template(kind)}) or say --template "
            f"{kind_template(kind)}"
        )
    sweep = load_sweep(sweep_dir)
    return sweep.root, sweep.name, summary(sweep)


def render_report(
    sweep_dir: str | Path,
    template: str | None = None,
    parameters: dict[str, Any] | None = None,
    html: bool = True,
    log: Callable[[str], None] = print,
) -> ReportPaths:
    """Execute ``template`` (None: :func:`default_template`) over the sweep at ``sweep_dir``
    and write the report into it."""
    import nbformat
    from papermill.translators import translate_parameters

    parameters = dict(parameters or {})
    template = template or default_template(sweep_dir)
    root, name, line = _load(sweep_dir, template)
    log(line)
    final = report_paths(root, template, html)
    with ExitStack() as stack:
        template_path = resolve_template(template, stack)
        check_parameters(parameters, template_parameters(template_path))
        _remove_stale_work_dirs(root)
        try:
            tmp = Path(tempfile.mkdtemp(prefix=f".report-{os.getpid()}-", dir=root))
        except OSError as e:
            raise VlabError(f"cannot write the report into {root}: {e}") from e
        stack.callback(shutil.rmtree, tmp, ignore_errors=True)
        run_params = {**parameters, "sweep_dir": str(root), "figures_dir": str(tmp / "figures")}
        log(f"executing {template_path.name} on a kernel running {sys.executable} ...")
        nb = _execute(template_path, tmp / "report.ipynb", run_params, root, final.failed)
        # The saved notebook records where a re-run should write: the final figures directory.
        keep = {**parameters, "sweep_dir": str(root), "figures_dir": str(final.figures)}
        for cell in nb.cells:
            if "injected-parameters" in cell.get("metadata", {}).get("tags", []):
                cell.source = translate_parameters(KERNEL_NAME, "python", keep, "Parameters")
        nb.metadata.setdefault("papermill", {}).update(
            parameters=keep, input_path=str(template_path), output_path=str(final.notebook)
        )
        nb.metadata["title"] = f"vlab report: {name}"
        nbformat.write(nb, tmp / "report.ipynb")
        if html:
            (tmp / "report.html").write_text(export_html(nb), encoding="utf-8")
        _install(tmp, final)
    return final


def _execute(template: Path, out: Path, params: dict, cwd: Path, failed: Path):
    import papermill
    from nbclient.exceptions import CellTimeoutError, DeadKernelError
    from papermill.exceptions import PapermillExecutionError

    try:
        return papermill.execute_notebook(
            str(template),
            str(out),
            parameters=params,
            kernel_name=KERNEL_NAME,
            language="python",
            progress_bar=False,
            cwd=str(cwd),
            start_timeout=120,
            kernel_manager_class=ThisPythonKernelManager,
        )
    except PapermillExecutionError as e:
        if out.is_file():
            os.replace(out, failed)
        raise VlabError(
            f"the report notebook failed in cell [{e.exec_count}] with {e.ename}: {e.evalue}; "
            f"the partly executed notebook with the traceback is {failed}"
        ) from e
    except (DeadKernelError, CellTimeoutError, RuntimeError) as e:
        raise VlabError(f"the report kernel stopped: {e}") from e


def export_html(nb) -> str:
    """Self-contained HTML of an executed notebook: no code, figures inline, no CDN scripts."""
    from jinja2 import DictLoader
    from nbconvert import HTMLExporter

    exporter = HTMLExporter(
        template_name="lab",
        extra_loaders=[DictLoader({"vlab_report.html.j2": _HTML_TEMPLATE})],
        template_file="vlab_report.html.j2",
        exclude_input=True,
        exclude_input_prompt=True,
        exclude_output_prompt=True,
        embed_images=True,
    )
    title = nb.metadata.get("title", "report")
    body, _ = exporter.from_notebook_node(nb, resources={"metadata": {"name": title}})
    return body


def _install(tmp: Path, final: ReportPaths) -> None:
    """Move the rendered files into place: figures swapped whole, files replaced atomically."""
    old = tmp / "figures.old"
    if final.figures.exists():
        os.replace(final.figures, old)
    new_figures = tmp / "figures"
    if new_figures.exists():
        os.replace(new_figures, final.figures)
    else:
        final.figures.mkdir()
    os.replace(tmp / "report.ipynb", final.notebook)
    if final.html is not None:
        os.replace(tmp / "report.html", final.html)
    else:  # an older HTML would describe an older notebook
        final.notebook.with_suffix(".html").unlink(missing_ok=True)
    final.failed.unlink(missing_ok=True)
