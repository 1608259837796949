"""Report templates (papermill notebooks) shipped with vlab; see vlab.analysis.report."""
