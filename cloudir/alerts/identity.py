"""The IAM identity an alert names, as resources both readers build the same way.

GuardDuty's `accessKeyDetails` and ASFF's `AwsIamAccessKey` say the same thing in two
spellings: an access key, the kind of principal that used it, a name and a principal id.
Both readers hand those facts here, so a finding Security Hub forwarded from GuardDuty
scopes exactly as the native finding does.

The principal's ARN is built from the account and name because that is what CloudTrail's
`userIdentity.arn` holds for the calls to look for:
- IAMUser: `arn:<partition>:iam::<account>:user/<name>` (GuardDuty gives no IAM path;
  a user created under a path has it in CloudTrail, so the user name is the surer key);
- AssumedRole: the user name is the role's name, and the principal id is
  `<role id>:<session name>`, so the session's ARN is
  `arn:<partition>:sts::<account>:assumed-role/<role>/<session>` (STS leaves the role's
  path out of it, so this one is exact);
- Root: `arn:<partition>:iam::<account>:root`;
- FederatedUser: `arn:<partition>:sts::<account>:federated-user/<name>`.
"""

from __future__ import annotations

from typing import Any

from cloudir.alerts.model import AlertResource

NO_KEY = ("", "null", "none")  # what ASFF writes for "no key id" (`AWS::IAM::AccessKey:null`)


def identity_resources(
    *,
    partition: str,
    account: str | None,
    key_id: str | None,
    user_type: str | None,
    user_name: str | None,
    principal_id: str | None,
) -> list[AlertResource]:
    """The access key (when the alert names one) and the user or role behind it."""
    user_type = user_type or ("IAMUser" if user_name else None)
    session = principal_id.partition(":")[2] or None if principal_id else None
    principal = principal_arn(partition, account, user_type, user_name, session)
    facts: dict[str, Any] = {
        "user_type": user_type,
        "user_name": user_name,
        "principal_id": principal_id,
        "session": session if user_type == "AssumedRole" else None,
        "principal": principal,
    }
    facts = {k: v for k, v in facts.items() if v is not None}
    found: list[AlertResource] = []
    if key_id and key_id.strip().lower() not in NO_KEY:
        found.append(AlertResource("access-key", key_id, facts))
    if user_type == "AssumedRole" and user_name:
        found.append(AlertResource("iam-role", user_name, facts))
    elif user_type == "IAMUser" and user_name:
        found.append(AlertResource("iam-user", user_name, facts))
    elif user_type in ("Root", "FederatedUser") and principal:
        found.append(AlertResource("other", principal, facts))
    return found


def principal_arn(
    partition: str,
    account: str | None,
    user_type: str | None,
    user_name: str | None,
    session: str | None,
) -> str | None:
    if not account:
        return None
    if user_type == "Root":
        return f"arn:{partition}:iam::{account}:root"
    if not user_name:
        return None
    if user_type == "IAMUser":
        return f"arn:{partition}:iam::{account}:user/{user_name}"
    if user_type == "AssumedRole":
        return (
            f"arn:{partition}:sts::{account}:assumed-role/{user_name}/{session}"
            if session
            else None
        )
    if user_type == "FederatedUser":
        return f"arn:{partition}:sts::{account}:federated-user/{user_name}"
    return None


def arn_tail(value: str, marker: str) -> str | None:
    """The name after `marker` in an ARN (`function:` -> the function name), or None."""
    head, found, tail = value.partition(marker)
    if not found or not head.startswith("arn:"):
        return None
    name = tail.split(":")[0] if marker.endswith(":") else tail
    return name or None


def role_name(role_arn: str) -> str | None:
    """`arn:aws:iam::1:role/path/name` -> `name`."""
    tail = arn_tail(role_arn, ":role/")
    return tail.rsplit("/", 1)[-1] if tail else None
