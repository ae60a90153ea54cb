"""The de-identification key: from the environment or a secrets backend, never from the repository.

No key, no run: `deid_key` raises `KeyMissingError` when the key is absent, short or a known default.
"""

from __future__ import annotations

import os
import secrets

from carelake.errors import KeyMissingError

__all__ = ["deid_key", "throwaway_key", "KEY_ENV"]

KEY_ENV = "CARELAKE_DEID_KEY"
_DEFAULTS = {"changeme", "change-me", "secret", "password", "carelake", "test", "default", "key"}


def deid_key(*, env_var: str = KEY_ENV, min_length: int = 32, environ: dict | None = None) -> bytes:
    """The HMAC key for pseudonyms, checked for presence and strength."""
    environ = os.environ if environ is None else environ
    value = environ.get(env_var) or _from_airflow(env_var)
    if not value:
        raise KeyMissingError(
            f"no de-identification key: set {env_var} (at least {min_length} characters, e.g. from "
            f"`python -c 'import secrets; print(secrets.token_hex(32))'`) or store it in the Airflow "
            f"variable {env_var.lower()}; no key, no run"
        )
    if len(value) < min_length or value.lower().strip() in _DEFAULTS or len(set(value)) < 8 or _repeats(value):
        raise KeyMissingError(f"the key in {env_var} is too weak: use at least {min_length} random characters")
    return value.encode("utf-8")


def _repeats(value: str) -> bool:
    """A key made of one short block repeated ("0123456789" * 4) has far less entropy than its length."""
    return any(len(value) % n == 0 and value == value[:n] * (len(value) // n) for n in range(1, len(value) // 2 + 1))


def throwaway_key() -> str:
    """A random key for the demo, which then says that its pseudonyms cannot be reproduced."""
    return secrets.token_hex(32)


def _from_airflow(env_var: str) -> str | None:
    """Airflow's secrets backend (variables), only inside an Airflow task; never at DAG parse time."""
    if "AIRFLOW_CTX_DAG_ID" not in os.environ:
        return None
    try:
        from airflow.sdk import Variable

        return Variable.get(env_var.lower(), default=None)
    except Exception:  # no Airflow, or no backend configured: the environment is the only source
        return None
