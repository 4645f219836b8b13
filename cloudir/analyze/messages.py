"""The readable `message` of a CloudTrail row, and the short principal name in it.

Only CloudTrail's message is built here: every other parser writes its rows' `message`
where it builds the row (container, host, image layer and response parsers). The report
shortens principals as these messages do, so it imports `short_principal` from here.
"""

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
