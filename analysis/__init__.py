"""Reports over sweeps: run directories in, tidy tables, statistics, figures and HTML out.

``load`` (run directories -> tables), ``stats`` (Kaplan-Meier, log-rank, bootstrap),
``tables`` (what figures plot and tables print), ``plots`` (matplotlib figures), ``notebook``
(display helpers for templates), ``report`` (papermill + nbconvert), ``cli`` (``vlab report``).
Nothing heavy is imported here: the root CLI imports ``vlab.analysis.cli`` on every call.
"""
