"""SQL-on-FHIR v2: flat tables from FHIR resources by ViewDefinitions, in pure Python.

The curated zone's tables are defined by the ViewDefinitions in ``conf/views/``. A view is compiled
once (its FHIRPath expressions become Python closures) and then evaluated resource by resource, which
is what a Spark ``mapInArrow`` worker does over millions of resources::

    view = compile_view(json.load(open("conf/views/patient.json")))
    view.columns                      # [("id", "id", False), ("mrn", "string", False), ...]
    rows = view.evaluate(resource)    # list of dicts, one per row, keys in column order

Specification: https://sql-on-fhir.org (ViewDefinition, processing model, required FHIRPath subset).
``getResourceKey()`` is the resource id and ``getReferenceKey()`` the id in a relative reference
(``Patient/123``), so keys join with each other and with the silver tables' ids.
"""

from __future__ import annotations

from typing import Iterable

from ._io import ResourceFileError, load_resources, rows_to_csv
from ._view import CompiledView, compile_view
from .errors import FhirPathError, ViewError

__all__ = [
    "CompiledView", "FhirPathError", "ResourceFileError", "ViewError",
    "compile_view", "load_resources", "rows_to_csv", "run_view",
]


def run_view(view: dict, resources: Iterable[dict]) -> list[dict]:
    """Compile `view` and evaluate it over `resources`: all rows, in resource order."""
    return list(compile_view(view).evaluate_many(resources))
