"""kdlens.report: the report of a study (report.md, a self-contained report.html, figures, CSVs).

:func:`write_report` takes an :class:`kdlens.stats.Analysis` (from :func:`kdlens.stats.analyse`).
"""

from kdlens.report.render import write_report

__all__ = ["write_report"]
