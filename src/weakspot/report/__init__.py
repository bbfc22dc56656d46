"""The weakness report: self-contained HTML, ``summary.json`` and Markdown.

``write_report(run_dir)`` renders every section of :data:`SECTION_REGISTRY` (one registry,
resolved lazily: Python and the CLI build the same page); :func:`register_section` adds one at
run time (see docs/report.md).
"""

from weakspot.report.builder import (
    SECTION_REGISTRY,
    SUMMARY_SCHEMA_VERSION,
    ReportContext,
    Section,
    SectionEntry,
    SectionOutput,
    esc,
    register_section,
    registered_sections,
    write_report,
)

__all__ = [
    "write_report",
    "Section",
    "SectionOutput",
    "SectionEntry",
    "SECTION_REGISTRY",
    "ReportContext",
    "register_section",
    "registered_sections",
    "esc",
    "SUMMARY_SCHEMA_VERSION",
]
