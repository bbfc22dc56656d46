"""The weakness report: self-contained HTML, ``summary.json`` and Markdown.

``write_report(run_dir)`` renders a list of :class:`Section` s; other layers add
theirs with :func:`register_section` (see docs/report.md).
"""

from weakspot.report.builder import (  # noqa: F401
    SUMMARY_SCHEMA_VERSION,
    ReportContext,
    Section,
    SectionOutput,
    esc,
    register_section,
    registered_sections,
    write_report,
)

__all__ = ["write_report", "Section", "SectionOutput", "ReportContext", "register_section", "registered_sections",
           "esc", "SUMMARY_SCHEMA_VERSION"]
