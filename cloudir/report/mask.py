"""Secrets never leave the laptop in a report: mask them in every string we render.

A report is forwarded to people and systems that must not receive live credentials, yet
raw events can carry them (a secret access key in a CreateAccessKey response copied by a
tool, a session token in a request, a password in user data). Masking works on two
levels: by key name anywhere in a JSON document, and by value shape in any text.
"""

from __future__ import annotations

import re
from typing import Any

MASK = "[masked]"

# Keys whose value is a secret, matched case-insensitively on the key with separators
# removed (secretAccessKey, secret_access_key, SecretString, x-amz-security-token...).
_SECRET_KEYS = re.compile(
    r"(secretaccesskey|secretkey|sessiontoken|securitytoken|password|passwd|passphrase|"
    r"secretstring|secretbinary|privatekey|clientsecret|apikey|authorization)$"
)

_PEM_END = r"-----END [A-Z ]*PRIVATE KEY-----"

# Values that are secrets whatever key holds them.
_SECRET_VALUES = [
    # key=value or "key": "value" inside free text (user data, command lines, errors)
    re.compile(
        r"(?i)((?:aws_)?(?:secret_access_key|session_token|security_token|password|passwd|"
        r"secret)\s*[=:]\s*[\"']?)([^\s\"'&,;]{4,})"
    ),
    # STS session tokens (FwoGZXIvYXdz..., IQoJb3JpZ2lu...)
    re.compile(r"()((?:FwoGZXIvYXdz|IQoJb3JpZ2lu)[A-Za-z0-9/+=]{20,})"),
    # PEM private keys
    re.compile(r"()(-----BEGIN [A-Z ]*PRIVATE KEY-----.*?(?:" + _PEM_END + r"|$))", re.S),
]


def _is_secret_key(key: str) -> bool:
    return bool(_SECRET_KEYS.search(re.sub(r"[^a-z]", "", key.lower())))


def mask_text(text: str) -> str:
    for pattern in _SECRET_VALUES:
        text = pattern.sub(lambda m: m.group(1) + MASK, text)
    return text


def mask_document(value: Any) -> Any:
    """A copy of a parsed JSON document with every secret replaced by MASK."""
    if isinstance(value, dict):
        return {
            k: (MASK if _is_secret_key(str(k)) and v not in (None, "") else mask_document(v))
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [mask_document(v) for v in value]
    if isinstance(value, str):
        return mask_text(value)
    return value
