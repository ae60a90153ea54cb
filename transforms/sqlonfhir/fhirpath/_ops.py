"""FHIRPath value semantics: equality, ordering, arithmetic and boolean logic on JSON values.

Collections are Python lists; an empty list is FHIRPath's empty collection ``{}``, and None stands for
an unknown (empty) boolean result in three-valued logic.
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation

from ..errors import FhirPathError
from ._model import compare_temporal

__all__ = [
    "to_bool", "singleton", "equal", "equivalent", "collections_equal", "collections_equivalent",
    "compare", "arithmetic", "distinct", "contains_item",
]

_NUMBERS = (int, float, Decimal)


def singleton(coll: list, what: str):
    """The only item of `coll`, None when empty; an error when there are several."""
    if not coll:
        return None
    if len(coll) > 1:
        raise FhirPathError(f"{what} expects a single item, found {len(coll)}")
    return coll[0]


def to_bool(coll: list, what: str):
    """FHIRPath singleton evaluation of collections in a boolean context: True, False or None (empty)."""
    if not coll:
        return None
    if len(coll) > 1:
        raise FhirPathError(f"{what} expects a single boolean, found a collection of {len(coll)} items")
    value = coll[0]
    if type(value) is bool:
        return value
    # A single non-boolean item counts as true (FHIRPath "Singleton Evaluation of Collections").
    return True


def _is_number(v) -> bool:
    return type(v) in (int, float, Decimal)


def _dec(v) -> Decimal:
    return Decimal(repr(v)) if type(v) is float else Decimal(v)


def equal(a, b):
    """FHIRPath ``=`` on two single items: True, False, or None when precision leaves it unknown."""
    ta, tb = type(a), type(b)
    if ta is str and tb is str:
        if a == b:
            return True
        if a[:4].isdigit() and b[:4].isdigit() or (":" in a[:3] and ":" in b[:3]):
            r = compare_temporal(a, b)
            if r is NotImplemented:
                return False
            return None if r is None else r == 0
        return False
    if ta is bool or tb is bool:
        return ta is tb and a == b
    if ta in _NUMBERS and tb in _NUMBERS:
        if ta is tb:
            return a == b
        return _dec(a) == _dec(b)
    if ta is dict and tb is dict:
        return a == b
    return False


def equivalent(a, b) -> bool:
    """FHIRPath ``~``: case- and whitespace-insensitive for strings, precision-tolerant for decimals."""
    ta, tb = type(a), type(b)
    if ta is str and tb is str:
        return " ".join(a.lower().split()) == " ".join(b.lower().split())
    if ta in _NUMBERS and tb in _NUMBERS and not (ta is bool or tb is bool):
        da, db = _dec(a), _dec(b)
        places = min(-da.as_tuple().exponent, -db.as_tuple().exponent, 8)
        q = Decimal(10) ** -max(places, 0)
        return da.quantize(q) == db.quantize(q)
    return bool(equal(a, b))


def collections_equal(left: list, right: list):
    if not left or not right:
        return None
    if len(left) != len(right):
        return False
    unknown = False
    for a, b in zip(left, right):
        r = equal(a, b)
        if r is False:
            return False
        if r is None:
            unknown = True
    return None if unknown else True


def collections_equivalent(left: list, right: list) -> bool:
    if not left and not right:
        return True
    if len(left) != len(right):
        return False
    remaining = list(right)
    for a in left:
        for i, b in enumerate(remaining):
            if equivalent(a, b):
                del remaining[i]
                break
        else:
            return False
    return True


def compare(a, b, op: str):
    """-1, 0 or 1 ordering two single items; None when unknown. Raises on items that cannot be ordered."""
    ta, tb = type(a), type(b)
    if ta is str and tb is str:
        if a[:1].isdigit() and b[:1].isdigit():
            r = compare_temporal(a, b)
            if r is not NotImplemented:
                return r
        return (a > b) - (a < b)
    if ta is not bool and tb is not bool and ta in _NUMBERS and tb in _NUMBERS:
        if ta is not tb:
            a, b = _dec(a), _dec(b)
        return (a > b) - (a < b)
    if ta is dict and tb is dict and _is_number(a.get("value")) and _is_number(b.get("value")):
        if (a.get("code") or a.get("unit")) == (b.get("code") or b.get("unit")):
            return compare(a["value"], b["value"], op)
        return None
    raise FhirPathError(f"cannot compare {_type_name(a)} with {_type_name(b)} using {op!r}")


def _type_name(v) -> str:
    return {bool: "boolean", int: "integer", float: "decimal", Decimal: "decimal", str: "string",
            dict: "element"}.get(type(v), type(v).__name__)


def _to_number_result(d: Decimal):
    return float(d)


def arithmetic(op: str, a, b):
    """``+ - * / div mod`` on two single items; None where FHIRPath gives empty (division by zero)."""
    ta, tb = type(a), type(b)
    if op == "+" and ta is str and tb is str:
        return a + b
    if ta is bool or tb is bool or ta not in _NUMBERS or tb not in _NUMBERS:
        raise FhirPathError(f"operator {op!r} cannot apply to {_type_name(a)} and {_type_name(b)}")
    if ta is int and tb is int:
        if op == "+":
            return a + b
        if op == "-":
            return a - b
        if op == "*":
            return a * b
        if b == 0:
            return None
        if op == "div":
            q = abs(a) // abs(b)
            return q if (a >= 0) == (b >= 0) else -q
        if op == "mod":
            r = abs(a) % abs(b)
            return r if a >= 0 else -r
        return _to_number_result(Decimal(a) / Decimal(b))
    # Decimal arithmetic keeps 0.1 + 0.2 = 0.3 as FHIRPath (and analysts) expect.
    da, db = _dec(a), _dec(b)
    try:
        if op == "+":
            return _to_number_result(da + db)
        if op == "-":
            return _to_number_result(da - db)
        if op == "*":
            return _to_number_result(da * db)
        if db == 0:
            return None
        if op == "/":
            return _to_number_result(da / db)
        if op == "div":
            return int(da / db)
        return _to_number_result(da % db)
    except InvalidOperation:
        return None


def contains_item(coll: list, item) -> bool:
    return any(equal(x, item) for x in coll)


def distinct(coll: list) -> list:
    """Items of `coll` without repeats, first occurrence kept (dicts are unhashable, hence the scan)."""
    out: list = []
    seen: set = set()
    for x in coll:
        if type(x) in (str, int, float, bool):
            key = (type(x) is bool, x)
            if key in seen:
                continue
            seen.add(key)
            out.append(x)
        elif not contains_item(out, x):
            out.append(x)
    return out
