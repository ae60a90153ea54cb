"""The FHIRPath subset that SQL-on-FHIR v2 views need, compiled to Python closures.

>>> from transforms.sqlonfhir.fhirpath import compile_path
>>> compile_path("name.where(use = 'official').family.first()").evaluate(
...     {"resourceType": "Patient", "name": [{"use": "official", "family": "Curie"}]})
['Curie']
"""

from __future__ import annotations

from ._compile import CompiledPath, Env, compile_path
from ._functions import FUNCTIONS, reference_key, resource_key
from ._parser import parse

__all__ = ["CompiledPath", "Env", "compile_path", "evaluate", "parse", "FUNCTIONS", "reference_key",
           "resource_key"]


def evaluate(expression: str, node, *, constants: dict | None = None) -> list:
    """Compile and evaluate in one go (for tests and the REPL; views compile once and reuse)."""
    return compile_path(expression, constants).evaluate(node)
