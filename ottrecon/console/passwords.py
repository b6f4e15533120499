"""Password hashing for console users: scrypt with a random salt, verified in constant time.

The encoded form is ``scrypt$n$r$p$salt_b64$hash_b64`` (standard base64), produced by
`ottrecon hash-password`. Neither passwords nor hashes are ever logged or shown.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
from dataclasses import dataclass, field

# n=2**17, r=8, p=1: 128 MiB and about 0.3 s per check on one core (OWASP's scrypt minimum). A
# guess costs an attacker with a stolen hash that much too. Hashes made with a smaller n (2**14
# before issue #9) are upgraded at the next sign-in (console/password_upgrades.py).
N, R, P = 2**17, 8, 1
SALT_BYTES = 16
KEY_BYTES = 32
# Bounds that keep one check from exhausting memory or time if the configuration is hostile or mistyped.
MAX_MEMORY = 256 * 1024 * 1024
MAX_P = 16


@dataclass(frozen=True)
class PasswordHash:
    """A parsed scrypt hash; repr() hides the salt and digest."""

    n: int
    r: int
    p: int
    salt: bytes = field(repr=False)
    digest: bytes = field(repr=False)

    @classmethod
    def parse(cls, encoded: str) -> PasswordHash:
        """Parse ``scrypt$n$r$p$salt$hash``; ValueError (never quoting the input) when malformed."""
        parts = encoded.split("$")
        if len(parts) != 6 or parts[0] != "scrypt" or not all(p.isascii() and p.isdigit() for p in parts[1:4]):
            raise ValueError("not a hash made by `ottrecon hash-password` (scrypt$n$r$p$salt$hash)")
        n, r, p = (int(x) for x in parts[1:4])
        if n < 2 or n & (n - 1) or r < 1 or 128 * n * r > MAX_MEMORY or not 1 <= p <= MAX_P:
            raise ValueError("scrypt parameters out of range")
        try:
            salt = base64.b64decode(parts[4], validate=True)
            digest = base64.b64decode(parts[5], validate=True)
        except binascii.Error as exc:
            raise ValueError("salt or hash is not base64") from exc
        if len(salt) < 8 or len(digest) < 16:
            raise ValueError("salt or hash too short")
        return cls(n, r, p, salt, digest)

    def encode(self) -> str:
        """The ``scrypt$n$r$p$salt$hash`` text this hash parses from."""
        b64 = base64.b64encode
        return f"scrypt${self.n}${self.r}${self.p}${b64(self.salt).decode()}${b64(self.digest).decode()}"

    def weaker_than(self, n: int) -> bool:
        """True when this hash costs less than a fresh one made with work factor n (and r=8, p=1)."""
        return self.n * self.r * self.p < n * R * P

    def matches(self, password: str) -> bool:
        """True when password hashes to this digest; the comparison takes the same time either way."""
        computed = _scrypt(password, self.salt, self.n, self.r, self.p, len(self.digest))
        return hmac.compare_digest(computed, self.digest)


def hash_password(password: str, *, n: int = N) -> str:
    """A new encoded scrypt hash of password with a fresh random salt (n: the work factor, a power of 2)."""
    salt = secrets.token_bytes(SALT_BYTES)
    return PasswordHash(n, R, P, salt, _scrypt(password, salt, n, R, P, KEY_BYTES)).encode()


def dummy_hash(n: int = N) -> PasswordHash:
    """Checked against when the user name is unknown, so that a wrong name costs as long as a wrong password."""
    return PasswordHash(n, R, P, b"\0" * SALT_BYTES, b"\0" * KEY_BYTES)


def _scrypt(password: str, salt: bytes, n: int, r: int, p: int, length: int) -> bytes:
    # OpenSSL refuses n*r*128 above maxmem's default of 32 MiB; allow what the bounds above permit.
    maxmem = 128 * r * (n + p + 2) + 1024 * 1024
    return hashlib.scrypt(
        password.encode("utf-8", "surrogatepass"), salt=salt, n=n, r=r, p=p, maxmem=maxmem, dklen=length
    )
