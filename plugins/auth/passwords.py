"""Password hashing with the standard library's scrypt (memory-hard, salted).

A hash is stored as one string: ``scrypt$<log2 n>$<r>$<p>$<salt>$<digest>``
(salt and digest base64url). The parameters travel with the hash, so raising
the cost later keeps old hashes verifiable.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import secrets

DEFAULT_LOG2_N = 14  # n = 16384, r = 8: about 16 MiB and tens of milliseconds per hash
_R, _P, _DKLEN = 8, 1, 32


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode("ascii")


def _scrypt(password: str, salt: bytes, log2_n: int, r: int, p: int) -> bytes:
    n = 1 << log2_n
    return hashlib.scrypt(
        password.encode("utf-8"),
        salt=salt,
        n=n,
        r=r,
        p=p,
        maxmem=256 * n * r + 1024 * 1024,
        dklen=_DKLEN,
    )


def hash_password(password: str, log2_n: int = DEFAULT_LOG2_N) -> str:
    """Hash ``password`` with a fresh random salt."""
    salt = secrets.token_bytes(16)
    digest = _scrypt(password, salt, log2_n, _R, _P)
    return f"scrypt${log2_n}${_R}${_P}${_b64(salt)}${_b64(digest)}"


def verify_password(password: str, stored: str) -> bool:
    """True when ``password`` matches ``stored``; False for any malformed hash."""
    try:
        scheme, log2_n, r, p, salt, digest = stored.split("$")
        if scheme != "scrypt" or not 1 <= int(log2_n) <= 20:
            return False
        expected = base64.urlsafe_b64decode(digest)
        actual = _scrypt(password, base64.urlsafe_b64decode(salt), int(log2_n), int(r), int(p))
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(actual, expected)


@functools.cache
def dummy_hash(log2_n: int = DEFAULT_LOG2_N) -> str:
    """A hash to verify against when the e-mail is unknown, so timing does not reveal
    which accounts exist. Computed once, on first use."""
    return hash_password(secrets.token_urlsafe(16), log2_n)
