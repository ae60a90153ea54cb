import threading

import pytest

from carelake.ahead import Ahead


def test_values_are_built_in_order_in_one_background_thread():
    order, threads = [], set()

    def builder(name):
        def build():
            order.append(name)
            threads.add(threading.current_thread().name)
            return name.upper()
        return build

    with Ahead({name: builder(name) for name in ("b", "a", "c")}) as values:
        assert list(values) == ["b", "a", "c"]
        assert dict(values.items()) == {"b": "B", "a": "A", "c": "C"}
    assert order == ["b", "a", "c"]
    assert len(threads) == 1 and threading.main_thread().name not in threads


def test_builders_run_while_the_reader_works_on_earlier_values():
    second_started = threading.Event()

    def second():
        second_started.set()
        return 2

    with Ahead({"first": lambda: 1, "second": second}) as values:
        assert values["first"] == 1
        # the reader has not asked for "second": it is being built anyway
        assert second_started.wait(timeout=10)
        assert values["second"] == 2


def test_a_failing_builder_raises_where_its_value_is_read():
    def broken():
        raise ValueError("view of silver.x failed")

    with Ahead({"ok": lambda: 1, "broken": broken}) as values:
        assert values["ok"] == 1
        with pytest.raises(ValueError, match="silver.x"):
            values["broken"]


def test_leaving_cancels_the_builders_not_started():
    release, started = threading.Event(), []

    def slow():
        started.append("slow")
        release.wait(timeout=10)
        return "slow"

    def later():
        started.append("later")
        return "later"

    threading.Timer(0.2, release.set).start()  # after the reader has failed and left
    with pytest.raises(RuntimeError):
        with Ahead({"slow": slow, "later": later}):
            raise RuntimeError("the reader failed")
    assert "later" not in started
