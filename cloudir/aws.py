"""AWS for every stage that talks to it: capture reads the account, respond changes it.

One place builds the clients, so every command retries, times out and honours
`--endpoint-url` / `AWS_ENDPOINT_URL` the same way; one place turns botocore's failures
into one-line errors, reads a response's request id and opens the case as the caller.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from cloudir.custody_actions import CustodyAction
from cloudir.errors import CloudError

if TYPE_CHECKING:
    from cloudir.case import Case

T = TypeVar("T")


@dataclass(frozen=True)
class AwsOptions:
    profile: str | None = None
    region: str | None = None
    endpoint_url: str | None = None
    retry_mode: str = "adaptive"
    max_attempts: int = 10
    pool_size: int = 16


class Aws:
    """A boto3 session plus the client settings every capture shares."""

    def __init__(self, options: AwsOptions) -> None:
        import boto3
        from botocore.config import Config

        self.options = options
        try:
            self.session = boto3.Session(profile_name=options.profile, region_name=options.region)
        except Exception as exc:  # ProfileNotFound and friends
            raise CloudError(f"AWS session: {exc}") from exc
        self.endpoint_url = options.endpoint_url or os.environ.get("AWS_ENDPOINT_URL") or None
        self.config = Config(
            retries={"mode": options.retry_mode, "max_attempts": options.max_attempts},
            connect_timeout=10,
            read_timeout=60,
            max_pool_connections=max(10, options.pool_size),
            user_agent_extra="cloudir",
        )

    @property
    def region(self) -> str:
        return self.session.region_name or "us-east-1"

    def client(self, service: str, region: str | None = None, attempts: int | None = None) -> Any:
        """`attempts` caps the tries of each call: 1 for a call that must not be repeated
        blindly (a create whose answer was lost would run twice)."""
        config = self.config
        if attempts is not None:
            from botocore.config import Config

            mode = self.options.retry_mode
            config = config.merge(Config(retries={"mode": mode, "max_attempts": attempts}))
        return self.session.client(
            service,
            region_name=region or self.region,
            endpoint_url=self.endpoint_url,
            config=config,
        )

    def caller_identity(self) -> dict[str, str]:
        """Who is capturing: goes into custody as the actor."""
        return caller_of(call("sts:GetCallerIdentity", self.client("sts").get_caller_identity))


def caller_of(response: dict[str, Any]) -> dict[str, str]:
    """The caller from a GetCallerIdentity response, as custody and meta.json hold it."""
    return {k: response[k] for k in ("Account", "Arn", "UserId") if k in response}


DENIED_CODES = frozenset(
    {
        "AccessDenied",
        "AccessDeniedException",
        "UnauthorizedOperation",
        "Client.UnauthorizedOperation",
        "UnauthorizedAccess",
        "AuthorizationError",
    }
)
"""Error codes that mean the caller lacks an IAM permission (EC2, IAM, STS, Auto Scaling)."""


def open_case_as_caller(
    aws: Aws, root: Path, title: str | None = None, examiner: str | None = None
) -> tuple[Case, dict[str, str]]:
    """Open (or create) the case with the AWS caller as custody's actor, on the record:
    every command that talks to AWS starts here."""
    from cloudir.case import Case

    identity = aws.caller_identity()
    case = Case.open_or_create(root, title=title, examiner=examiner)
    case.actor = identity.get("Arn", case.actor)
    case.record(
        CustodyAction.CALLER_IDENTITY, None, [], note="STS GetCallerIdentity", source=identity
    )
    return case, identity


def call(what: str, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Run one AWS call; turn botocore's failures into a one-line CloudError (exit 4).

    `what` is the IAM action ("ec2:CreateSnapshots"), so a refusal names the permission
    the responder has to ask for.
    """
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        return fn(*args, **kwargs)
    except ClientError as exc:
        err = exc.response.get("Error", {})
        code = err.get("Code", "Error")
        message = err.get("Message", "")
        if code in DENIED_CODES:
            raise CloudError(
                f"{what} denied: missing permission {what} ({code}: {message})".replace(" ()", "")
            ) from exc
        raise CloudError(f"{what} failed: {code}: {message}".rstrip(": ")) from exc
    except BotoCoreError as exc:
        raise CloudError(f"{what} failed: {exc}") from exc


def request_id(response: dict[str, Any]) -> str | None:
    """The id AWS gave the request: the same id is in the account's CloudTrail event."""
    found = response.get("ResponseMetadata", {}).get("RequestId")
    return None if found is None else str(found)


def keep_body(bodies: list[bytes], response_dict: Any = None, **_: Any) -> None:
    """botocore `before-parse` hook: the response body exactly as AWS sent it.

    Register it with `functools.partial(keep_body, bodies)`; every attempt appends its
    body (a retried call leaves several), so the last one is the answer boto3 parsed.
    Evidence is stored from these bytes, not from boto3's re-encoding of what it parsed.
    """
    if isinstance(response_dict, dict) and isinstance(response_dict.get("body"), bytes):
        bodies.append(response_dict["body"])


def tag_list(tags: dict[str, str]) -> list[dict[str, str]]:
    """Tags as the EC2 API takes them (TagSpecifications, CreateTags)."""
    return [{"Key": k, "Value": v} for k, v in tags.items()]


def error_code(exc: CloudError) -> str | None:
    """The AWS error code behind a CloudError that `call` raised, if AWS answered."""
    response = getattr(exc.__cause__, "response", None)
    code = response.get("Error", {}).get("Code") if isinstance(response, dict) else None
    return None if code is None else str(code)
