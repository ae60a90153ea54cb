"""Errors raised while compiling or evaluating a ViewDefinition.

Every message names where the problem is (``select[1].column[0]``, ``where[0]``) and what was expected,
so that a data engineer can fix the view file without reading this package.
"""

from __future__ import annotations

__all__ = ["ViewError", "FhirPathError"]


class ViewError(ValueError):
    """A ViewDefinition that is invalid, or that cannot be evaluated on a resource."""


class FhirPathError(ViewError):
    """A FHIRPath expression that cannot be parsed, compiled or evaluated."""

    def __init__(self, message: str, *, expression: str | None = None, position: int | None = None):
        if expression is not None and position is not None:
            message = f"{message} at position {position} in {expression!r}"
        elif expression is not None:
            message = f"{message} in {expression!r}"
        super().__init__(message)
        self.expression = expression
        self.position = position
