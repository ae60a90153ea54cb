import pytest

from carelake.errors import KeyMissingError
from carelake.keys import deid_key, throwaway_key


def test_no_key_no_run():
    with pytest.raises(KeyMissingError, match="no de-identification key: set CARELAKE_DEID_KEY"):
        deid_key(environ={})


@pytest.mark.parametrize("weak", ["short", "changeme", "a" * 40, "ab" * 20, "0123456789" * 4, "Tr0ub4dor&3x!" * 3])
def test_weak_keys_are_refused(weak):
    with pytest.raises(KeyMissingError, match="too weak"):
        deid_key(environ={"CARELAKE_DEID_KEY": weak})


def test_strong_key_is_returned_as_bytes():
    key = throwaway_key()
    assert deid_key(environ={"CARELAKE_DEID_KEY": key}) == key.encode()
    assert throwaway_key() != key
