"""Plan stopping a stolen key: make a long-term key inactive, revoke sessions already out.

An inactive key can be made active again, which is why this and not deletion is the
first move: the key and its history stay for the investigation. Temporary credentials
(`ASIA...`) cannot be deactivated at all; the only lever is a deny on the role or user
that issued them, conditioned on `aws:TokenIssueTime`, which is what the console's
"Revoke active sessions" does.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any

from cloudir.aws import call, caller_of
from cloudir.errors import UsageError
from cloudir.respond.changes import Change, Context, read
from cloudir.respond.plan import Plan

REVOKE_POLICY = "AWSRevokeOlderSessions"
KEY_ID = re.compile(r"^(AKIA|ASIA)[A-Z0-9]{12,124}$")


def revoke_document(issued_before: str) -> dict[str, Any]:
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Deny",
                "Action": ["*"],
                "Resource": ["*"],
                "Condition": {"DateLessThan": {"aws:TokenIssueTime": issued_before}},
            }
        ],
    }


def plan_disable_key(
    ctx: Context,
    access_key_id: str | None,
    revoke_sessions: bool,
    role: str | None = None,
    case_root: Path | None = None,
) -> Plan:
    if access_key_id is None:
        if not (role and revoke_sessions):
            raise UsageError("name --access-key-id, or --role NAME with --revoke-sessions")
    elif not KEY_ID.match(access_key_id):
        raise UsageError(f"{access_key_id!r} is not an AWS access key id (AKIA... or ASIA...)")
    changes: list[Change] = []
    notes: list[str] = []
    facts: dict[str, Any] = {"access_key_id": access_key_id}
    revoke_on: str | None = f"role/{role}" if role else None
    sts = ctx.client("sts")
    identity = call("sts:GetCallerIdentity", sts.get_caller_identity)
    caller = caller_of(identity)
    aws_now = _server_time(identity)
    facts["caller"] = caller.get("Arn")
    if access_key_id:
        _same_account(ctx, access_key_id, caller)

    if access_key_id and access_key_id.startswith("AKIA"):
        user, key_changes = _user_key(ctx, access_key_id, facts, notes)
        changes.extend(key_changes)
        revoke_on = revoke_on or f"user/{user}"
    elif access_key_id:
        if not revoke_sessions:
            raise UsageError(
                f"{access_key_id} is a temporary session key: it cannot be made inactive. "
                "Add --revoke-sessions (with --role NAME, or after cloudir timeline so the "
                "case's CloudTrail names the role)"
            )
        revoke_on = revoke_on or principal_from_timeline(
            case_root, access_key_id, caller.get("Account")
        )
        if not revoke_on:
            raise UsageError(
                f"no CloudTrail event in the case names who {access_key_id} belongs to: "
                "pass --role NAME"
            )

    if revoke_sessions:
        assert revoke_on
        # AWS's clock or ours, whichever is later: a laptop running behind would leave
        # the sessions issued in between working.
        now = max(datetime.now(UTC), aws_now or datetime.now(UTC)).strftime("%Y-%m-%dT%H:%M:%SZ")
        policy = Change(
            "inline-policy",
            revoke_on,
            None,
            revoke_document(now),
            "",
            detail={"policy": REVOKE_POLICY},
        )
        policy.before = read(ctx, policy)
        kind, _, name = revoke_on.partition("/")
        policy.summary = (
            f"{kind} {name}: add inline policy {REVOKE_POLICY} denying everything to "
            f"sessions issued before {now}"
        )
        changes.append(policy)
        notes.extend(_principal_warnings(ctx, kind, name, caller))
        if kind == "role":
            notes.append(
                f"every session of role {name} issued before {now} stops working, the "
                "intruder's and everyone else's: services and people using the role must "
                "get new sessions. Whoever can still assume the role (a leaked key, the "
                "trust policy, an instance profile) can get a new one: close that too"
            )
        else:
            notes.append(
                f"temporary credentials user {name} got (GetSessionToken, "
                f"GetFederationToken) before {now} stop working"
            )
        facts["revoke_sessions_on"] = revoke_on
        facts["issued_before"] = now
    elif access_key_id and access_key_id.startswith("AKIA"):
        notes.append(
            "sessions already made with this key (GetSessionToken, AssumeRole) keep "
            "working until they expire: add --revoke-sessions, and revoke the roles it "
            "assumed with --role NAME --revoke-sessions"
        )
    subject = access_key_id or f"role/{role}"
    return Plan("disable-key", subject, ctx.aws.region, changes, notes, facts)


def _user_key(
    ctx: Context, access_key_id: str, facts: dict[str, Any], notes: list[str]
) -> tuple[str, list[Change]]:
    """The user a long-term key belongs to, and the change making it inactive."""
    iam = ctx.client("iam")
    used = call("iam:GetAccessKeyLastUsed", iam.get_access_key_last_used, AccessKeyId=access_key_id)
    user = used.get("UserName")
    if not user or user == "root":
        raise UsageError(
            f"{access_key_id} belongs to the account's root user: only root can change "
            "root keys (sign in as root, or ask AWS Support)"
        )
    last = used.get("AccessKeyLastUsed", {})
    facts.update(
        user=user,
        last_used=last.get("LastUsedDate"),
        last_service=last.get("ServiceName"),
        last_region=last.get("Region"),
    )
    changes = []
    status = Change("access-key-status", access_key_id, None, "Inactive", "", detail={"user": user})
    status.before = read(ctx, status)
    if status.before == "Inactive":
        notes.append(f"{access_key_id} of user {user} is already inactive")
    else:
        status.summary = f"access key {access_key_id} of user {user}: Active → Inactive"
        changes.append(status)
    keys = call("iam:ListAccessKeys", iam.list_access_keys, UserName=user)["AccessKeyMetadata"]
    others = [
        k["AccessKeyId"]
        for k in keys
        if k["AccessKeyId"] != access_key_id and k["Status"] == "Active"
    ]
    if others:
        notes.append(f"user {user} has other active keys, not touched: {', '.join(others)}")
    return user, changes


def _server_time(response: dict[str, Any]) -> datetime | None:
    """The Date header AWS sent with this response."""
    header = response.get("ResponseMetadata", {}).get("HTTPHeaders", {}).get("date")
    try:
        return parsedate_to_datetime(header).astimezone(UTC) if header else None
    except (TypeError, ValueError):
        return None


def _same_account(ctx: Context, access_key_id: str, caller: dict[str, str]) -> None:
    """A key of another account cannot be changed from this one: say so, do not guess."""
    sts = ctx.client("sts")
    owner = call("sts:GetAccessKeyInfo", sts.get_access_key_info, AccessKeyId=access_key_id)
    account = owner.get("Account")
    if account and caller.get("Account") and account != caller["Account"]:
        raise UsageError(
            f"{access_key_id} belongs to account {account}; these credentials are for "
            f"{caller['Account']}: run with credentials for {account}"
        )


def _principal_warnings(ctx: Context, kind: str, name: str, caller: dict[str, str]) -> list[str]:
    """What a responder must know before a deny lands on this role or user."""
    warnings = []
    arn = caller.get("Arn", "")
    own_role = ":assumed-role/" in arn and arn.split(":assumed-role/")[1].split("/")[0] == name
    own_user = arn.endswith(f":user/{name}")
    if (kind == "role" and own_role) or (kind == "user" and own_user):
        warnings.append(
            f"{kind} {name} is the one these credentials use: your own session stops "
            "working the moment the policy lands, and restore then needs other credentials"
        )
    if kind == "role" and name.startswith("AWSReservedSSO_"):
        warnings.append(
            f"{name} belongs to IAM Identity Center: an inline policy on it is overwritten "
            "when its permission set is provisioned again; revoke through the permission set"
        )
    if kind == "role":
        iam = ctx.client("iam")
        path = call("iam:GetRole", iam.get_role, RoleName=name)["Role"].get("Path", "/")
        if path.startswith("/aws-service-role/"):
            raise UsageError(
                f"{name} is a service-linked role: it takes no inline policy; contain the "
                "service that uses it instead"
            )
    return warnings


def principal_from_timeline(
    case_root: Path | None, access_key_id: str, account: str | None = None
) -> str | None:
    """The role (or user) a session key belongs to, as the case's CloudTrail says."""
    from cloudir.case_folder import CasePaths

    if case_root is None or not CasePaths(case_root).timeline_parts():
        return None
    from cloudir.analyze.query import connect
    from cloudir.case import Case

    con = connect(Case.open(case_root))
    try:
        row = con.execute(
            """
            SELECT json_extract_string(raw, '$.userIdentity.type'),
                   json_extract_string(raw, '$.userIdentity.sessionContext.sessionIssuer.type'),
                   json_extract_string(raw, '$.userIdentity.sessionContext.sessionIssuer.userName'),
                   json_extract_string(raw, '$.userIdentity.userName'),
                   json_extract_string(raw, '$.userIdentity.accountId')
            FROM timeline
            WHERE source = 'cloudtrail'
              AND json_extract_string(raw, '$.userIdentity.accessKeyId') = ?
            ORDER BY timestamp
            LIMIT 1
            """,
            [access_key_id],
        ).fetchone()
    finally:
        con.close()
    if not row:
        return None
    identity_type, issuer_type, issuer_name, user_name, key_account = row
    if account and key_account and key_account != account:
        return None  # a role of that name here would be someone else's
    if issuer_type == "Role" and issuer_name:
        return f"role/{issuer_name}"
    if identity_type == "IAMUser" and user_name:
        return f"user/{user_name}"
    if issuer_type == "IAMUser" and issuer_name:
        return f"user/{issuer_name}"
    return None
