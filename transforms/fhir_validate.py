"""Validate FHIR R4 resources with fhir.resources (R4B models, which cover R4 for these resources).

Pydantic's messages echo the offending input value; a value may be an identifier, so `validate`
rebuilds the message from the error's location and type only.
"""

from __future__ import annotations

from functools import lru_cache

from pydantic import ValidationError

from transforms.errors import RecordError

__all__ = ["validate", "model_class"]


@lru_cache(maxsize=None)
def model_class(resource_type: str):
    """The fhir.resources R4B model class of a resource type, or None when the type is unknown."""
    from fhir.resources.R4B import get_fhir_model_class

    try:
        return get_fhir_model_class(resource_type)
    except (ValueError, ImportError):
        return None


def _location(loc: tuple) -> str:
    return ".".join(str(part) for part in loc if part != "__root__") or "(resource)"


def validate(resource: dict) -> None:
    """Raise `RecordError` (FHIR_INVALID) when `resource` is not a valid R4 resource."""
    resource_type = resource.get("resourceType") if isinstance(resource, dict) else None
    if not isinstance(resource_type, str):
        raise RecordError("FHIR_INVALID", "resource has no resourceType")
    cls = model_class(resource_type)
    if cls is None:
        raise RecordError("FHIR_INVALID", f"unknown resourceType {resource_type!r}")
    try:
        cls.model_validate(resource)
    except ValidationError as exc:
        problems = [f"{resource_type}.{_location(e['loc'])}: {e['type']}" for e in exc.errors()[:3]]
        more = exc.error_count() - len(problems)
        raise RecordError("FHIR_INVALID", "; ".join(problems) + (f" (+{more} more)" if more > 0 else "")) from None
    except Exception as exc:  # noqa: BLE001 - fhir.resources' own validators raise TypeError, ValueError,
        # even AttributeError (a primitive extension such as `_status` that is not an object) on malformed shapes
        raise RecordError("FHIR_INVALID", f"{resource_type}: malformed element ({type(exc).__name__})") from None
