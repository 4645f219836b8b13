"""The readable `message` of every timeline row, in one place so they read alike."""

from __future__ import annotations

ERROR_MESSAGE_LIMIT = 160


def short_principal(user: str | None) -> str:
    """`arn:aws:iam::123:user/alice` reads as `user/alice`; other names stay whole."""
    if not user:
        return "unknown principal"
    if user.startswith("arn:"):
        return user.split(":", 5)[-1] or user
    return user


def cloudtrail(
    user: str | None,
    event_source: str | None,
    event_name: str | None,
    target: str | None,
    src_ip: str | None,
    error_code: str | None,
    error_message: str | None,
) -> str:
    service = (event_source or "?").removesuffix(".amazonaws.com")
    text = f"{short_principal(user)} called {service}:{event_name or '?'}"
    if target:
        text += f" on {target}"
    if src_ip:
        text += f" from {src_ip}"
    if error_code:
        text += f" - failed: {error_code}"
        if error_message:
            detail = error_message[:ERROR_MESSAGE_LIMIT]
            text += f" ({detail}{'...' if len(error_message) > ERROR_MESSAGE_LIMIT else ''})"
    return text
