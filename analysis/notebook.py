"""What a report notebook calls to put figures, tables and notes into its outputs.

Figures are shown from the PNG written to disk (``image/png`` output), so the executed
notebook, the HTML export (where nbconvert embeds it as base64) and ``figures/`` hold the
same pixels. Tables are plain HTML (``text/html``), readable in JupyterLab and in the export.
"""

from __future__ import annotations

import html
import io
import math
from pathlib import Path

import pandas as pd
from IPython.display import HTML, Image, display
from matplotlib.figure import Figure

from vlab.analysis.plots import save

_NOTE_STYLE = (
    "border-left:4px solid #d9822b;background:#fff6ea;padding:6px 10px;margin:4px 0;"
    "font-family:sans-serif;font-size:13px"
)


def show_figure(fig: Figure, name: str, figures_dir: str | Path | None = None) -> list[Path]:
    """Save ``fig`` as ``name``.png/.pdf under ``figures_dir`` and display the PNG.

    With ``figures_dir`` None the figure is only displayed. Returns the written paths.
    """
    if figures_dir is None:
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=150)
        display(Image(data=buf.getvalue(), format="png"))
        return []
    paths = save(fig, figures_dir, name)
    display(Image(data=paths[0].read_bytes(), format="png"))
    return paths


def _cell(value: object) -> str:
    if value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 1e-3 and value != 0 else f"{value:.3f}"
    return str(value)


def table_html(df: pd.DataFrame, title: str | None = None) -> str:
    """``df`` as an HTML table (missing values as a dash, floats to 3 decimals); MultiIndex
    columns (a group over its columns) become stacked header rows."""
    head = f"<h4>{html.escape(title)}</h4>" if title else ""
    if df.empty:
        return head + "<p><em>(no rows)</em></p>"
    text = df.astype(object).map(_cell)
    text.columns.names = [None] * text.columns.nlevels  # two header rows for MultiIndex columns
    return head + text.to_html(index=False, classes="vlab-table", border=0)


def show_table(df: pd.DataFrame, title: str | None = None) -> None:
    """Display ``df`` as an HTML table with an optional heading."""
    display(HTML(table_html(df, title)))


def show_notes(notes: list[str], title: str = "Warnings and notes") -> None:
    """Display ``notes`` as highlighted boxes (or a line saying there are none)."""
    if not notes:
        display(HTML(f"<p><strong>{html.escape(title)}:</strong> none.</p>"))
        return
    boxes = "".join(
        f'<div class="vlab-note" style="{_NOTE_STYLE}">&#9888; {html.escape(n)}</div>'
        for n in notes
    )
    display(HTML(f"<p><strong>{html.escape(title)} ({len(notes)}):</strong></p>{boxes}"))
