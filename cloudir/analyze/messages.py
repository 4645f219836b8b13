"""The readable `message` of a CloudTrail row, and the short principal name in it.

Only CloudTrail's message is built here: every other parser writes its rows' `message`
where it builds the row (container, host, image layer and response parsers). The report
and the terminal's findings table shorten principals as these messages do, so they
import `short_principal` and `reader_names` from here.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence

ERROR_MESSAGE_LIMIT = 160


def short_principal(user: str | None) -> str:
    """`arn:aws:iam::123:user/alice` reads as `user/alice`; other names stay whole."""
    if not user:
        return "unknown principal"
    if user.startswith("arn:"):
        return user.split(":", 5)[-1] or user
    return user


def account_principal(user: str) -> str:
    """`arn:aws:iam::123:user/alice` reads as `123:user/alice`: the short name with the
    account that tells one `user/alice` from another's; an ARN without an account (or
    not an ARN) stays whole."""
    parts = user.split(":", 5)
    if user.startswith("arn:") and len(parts) == 6 and parts[4] and parts[5]:
        return f"{parts[4]}:{parts[5]}"
    return user


def reader_names(principals: Iterable[str]) -> dict[str, str]:
    """What to call each principal where they are shown together (a table, the stories).

    `user/alice` for `arn:aws:iam::1:user/alice`, unless another principal shortens to the
    same words (the same user name in two accounts: the Stratus corpus has five
    `user/christophe`): those read `111122223333:user/christophe`, and keep the whole
    ARN if even that is shared (two partitions), so no name stands for two principals.
    """
    unique = list(dict.fromkeys(p for p in principals if p))
    short = {p: short_principal(p) for p in unique}
    shared_short = Counter(short.values())
    account = {p: account_principal(p) for p in unique}
    shared_account = Counter(account.values())
    return {
        p: short[p]
        if shared_short[short[p]] == 1
        else account[p]
        if shared_account[account[p]] == 1
        else p
        for p in unique
    }


def cloudtrail(
    user: str | None,
    event_source: str | None,
    event_name: str | None,
    target: str | None,
    src_ip: str | None,
    error_code: str | None,
    error_message: str | None,
) -> str:
    return _cloudtrail_text(
        short_principal(user), _service(event_source), event_name, target, src_ip,
        error_code, error_message,
    )  # fmt: skip


def cloudtrail_column(
    users: Sequence[str | None],
    event_sources: Sequence[str | None],
    event_names: Sequence[str | None],
    targets: Sequence[str | None],
    src_ips: Sequence[str | None],
    error_codes: Sequence[str | None],
    error_messages: Sequence[str | None],
) -> list[str]:
    """`cloudtrail` for a column of records: the same text, each principal and service
    shortened once per column rather than once per record (a file's records share a few)."""
    short = {user: short_principal(user) for user in set(users)}
    service = {source: _service(source) for source in set(event_sources)}
    return [
        _cloudtrail_text(short[user], service[source], name, target, src_ip, code, detail)
        for user, source, name, target, src_ip, code, detail in zip(
            users, event_sources, event_names, targets, src_ips, error_codes, error_messages,
            strict=True,
        )
    ]  # fmt: skip


def _service(event_source: str | None) -> str:
    return (event_source or "?").removesuffix(".amazonaws.com")


def _cloudtrail_text(
    principal: str,
    service: str,
    event_name: str | None,
    target: str | None,
    src_ip: str | None,
    error_code: str | None,
    error_message: str | None,
) -> str:
    text = f"{principal} called {service}:{event_name or '?'}"
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
