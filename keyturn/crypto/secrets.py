"""Password generation under a target's rules, and fingerprints of values.

A fingerprint is HMAC-SHA256 of the value under a fingerprint key that keyturn generates
once and stores wrapped by the master key: it identifies a value in audit entries and
`show` output without revealing it, and stays the same across master key rotations.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import string

from keyturn.domain.errors import PolicyInvalid
from keyturn.domain.model import PasswordRules, Secret

ALPHABETS = {
    "urlsafe": string.ascii_letters + string.digits + "-_",
    "alnum": string.ascii_letters + string.digits,
    "hex": "0123456789abcdef",
    "ascii": string.ascii_letters + string.digits + string.punctuation,
}


def alphabet_of(rules: PasswordRules) -> str:
    base = ALPHABETS.get(rules.alphabet, rules.alphabet)
    chars = "".join(sorted(set(base) - set(rules.forbid)))
    if len(chars) < 16:
        raise PolicyInvalid(
            f"password alphabet has {len(chars)} usable characters; at least 16 are needed"
        )
    return chars


def check_rules(rules: PasswordRules) -> PasswordRules:
    if not rules.min_length <= rules.length <= rules.max_length:
        raise PolicyInvalid(
            f"password length {rules.length} is outside {rules.min_length}..{rules.max_length}"
        )
    alphabet_of(rules)
    return rules


def generate_password(rules: PasswordRules = PasswordRules()) -> Secret:
    """A random password of ``rules.length`` characters drawn with `secrets`."""
    chars = alphabet_of(check_rules(rules))
    return Secret("".join(secrets.choice(chars) for _ in range(rules.length)))


def fingerprint(key: bytes, value: Secret) -> str:
    """A stable, non-reversible identifier of *value* (first 128 bits of an HMAC)."""
    digest = hmac.new(key, value.reveal().encode(), hashlib.sha256).hexdigest()
    return "hmac-sha256:" + digest[:32]
