import json

from transforms.views import apply_view, view_columns

VIEW = {"resourceType": "ViewDefinition", "resource": "Patient", "status": "active", "select": [{"column": [
    {"name": "id", "path": "getResourceKey()", "type": "id"},
    {"name": "born", "path": "birthDate", "type": "date"},
    {"name": "deceased", "path": "deceased.ofType(boolean)", "type": "boolean"},
    {"name": "given", "path": "name.given", "collection": True},
]}]}


def test_view_columns_are_typed():
    assert view_columns(VIEW) == [("id", "string"), ("born", "string"), ("deceased", "boolean"), ("given", "string")]


def test_apply_view_keeps_passthrough_and_serializes_collections(spark):
    resource = {"resourceType": "Patient", "id": "p1", "birthDate": "1980-05-17", "deceasedBoolean": False,
                "name": [{"given": ["Ana", "María"]}]}
    silver = spark.createDataFrame([("h1", "pk1", json.dumps(resource))], "hospital string, person_key string, resource string")
    (row,) = apply_view(silver, VIEW).collect()
    assert row.asDict() == {"hospital": "h1", "person_key": "pk1", "id": "p1", "born": "1980-05-17", "deceased": False,
                            "given": json.dumps(["Ana", "María"], ensure_ascii=False)}


def test_values_of_the_column_type_skip_the_caster_unchanged():
    # apply_view hands a value to its caster only when its type is not already the column's.
    from transforms.views import _READY, _caster

    values = [None, "x", "", 5, 0, -3, 5.0, 0.5, float("inf"), True, False, [1, "a"], {"a": 1}, 2 ** 70]
    for kind, ready in _READY.items():
        cast = _caster(kind)
        for value in values:
            try:
                expected = cast(value)
            except (TypeError, ValueError, OverflowError) as exc:
                expected = type(exc)
            if type(value) is ready:
                assert type(expected) is type(value) and expected == value, (kind, value)


def test_the_generated_row_caster_casts_like_the_per_value_casters():
    from transforms.views import _READY, _caster, _row_caster

    values = [None, "x", 5, 0.5, True, [1, "a"], {"a": 1}]
    kinds = list(_READY)
    cast_row = _row_caster(kinds)
    for value in values:
        row = tuple(value for _ in kinds)
        expected = []
        for kind in kinds:
            try:
                expected.append(_caster(kind)(value))
            except (TypeError, ValueError):
                expected.append(TypeError)
        if TypeError not in expected:
            assert cast_row(row) == tuple(expected)
            assert [type(v) for v in cast_row(row)] == [type(v) for v in expected]
    assert _row_caster([])(()) == ()
