"""What an alert says and what it points at: the contract between reading and acting.

Both GuardDuty findings and Security Hub ASFF findings (including the ones Security Hub
forwards from GuardDuty, Inspector, Macie and Config) become one `Alert`; everything
triage does afterwards (scope, playbook choice, collection, verdict) reads only this
model, so a new alert source is one new reader.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

# Families choose a playbook; one alert has exactly one, from its main resource.
FAMILIES = (
    "instance",  # EC2 instance (GuardDuty Instance, ASFF AwsEc2Instance)
    "access-key",  # IAM credentials (GuardDuty AccessKey, ASFF AwsIamAccessKey/User/Role)
    "s3-bucket",  # GuardDuty S3Bucket, ASFF AwsS3Bucket
    "kubernetes",  # GuardDuty EKSCluster / KubernetesCluster, ASFF AwsEksCluster
    "container",  # GuardDuty Container / ECSCluster, ASFF Container / AwsEcs*
    "lambda",  # GuardDuty Lambda, ASFF AwsLambdaFunction
    "rds",  # GuardDuty RDSDBInstance / RDSLimitlessDB, ASFF AwsRdsDbInstance
    "account",  # anything else: the account as a whole
)

SEVERITIES = ("informational", "low", "medium", "high", "critical")  # cloudir's levels


class AlertError(ValueError):
    """The document is not an alert cloudir can read; the message is one line naming the
    field (JSON path) that is missing or wrong. The CLI exits 2 with it."""


@dataclass(frozen=True)
class AlertResource:
    """One resource the alert names, as the alert names it."""

    kind: str  # "instance", "access-key", "iam-user", "iam-role", "s3-bucket", "eks-cluster",
    # "container", "ecs-cluster", "ecs-task", "lambda", "rds", "other"
    id: str  # instance id, access key id, bucket name, cluster name, function ARN, ...
    details: dict[str, Any] = field(default_factory=dict)  # the alert's own fields for it


@dataclass(frozen=True)
class Alert:
    source: str  # "guardduty" or "securityhub" (the document's shape)
    product: str  # who raised it: "GuardDuty", "Inspector", "Macie", "Config", "Security Hub", ...
    id: str  # GuardDuty finding id, or the ASFF Id
    type: str  # GuardDuty Type ("UnauthorizedAccess:IAMUser/...") or the first ASFF Types entry
    title: str
    severity: str  # one of SEVERITIES, mapped from the source's own scale
    family: str  # one of FAMILIES
    account: str | None
    region: str | None
    first_seen: datetime | None  # timezone-aware UTC
    last_seen: datetime | None
    sample: bool  # a GuardDuty sample finding (or ASFF Sample: true)
    resources: tuple[AlertResource, ...]
    # What the alert says the actor did, when it says: API name, caller, remote address...
    action: dict[str, Any] = field(default_factory=dict)
    raw: dict[str, Any] = field(default_factory=dict, repr=False)  # the finding as read

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready, without `raw` (the raw alert is evidence, stored as received)."""
        data = asdict(self)
        data.pop("raw")
        for key in ("first_seen", "last_seen"):
            value = getattr(self, key)
            data[key] = value.isoformat().replace("+00:00", "Z") if value else None
        return data


@dataclass(frozen=True)
class Scope:
    """What to collect and look at for one alert: entities plus a time window.

    The window is the alert's first/last seen widened by documented margins (see
    docs/triage.md): attackers enumerate before the behaviour GuardDuty names, and the
    alert's last_seen lags the activity.
    """

    account: str | None
    region: str | None
    start: datetime  # timezone-aware UTC
    end: datetime
    principals: tuple[str, ...] = ()  # ARNs of IAM users, roles, assumed-role sessions
    users: tuple[str, ...] = ()  # IAM user names
    roles: tuple[str, ...] = ()  # IAM role names
    access_keys: tuple[str, ...] = ()  # AKIA.../ASIA...
    instances: tuple[str, ...] = ()  # i-...
    containers: tuple[str, ...] = ()  # container names or ids
    images: tuple[str, ...] = ()  # container images
    buckets: tuple[str, ...] = ()
    clusters: tuple[str, ...] = ()  # EKS / ECS cluster names
    functions: tuple[str, ...] = ()  # Lambda function names or ARNs
    databases: tuple[str, ...] = ()  # RDS instance identifiers
    addresses: tuple[str, ...] = ()  # remote addresses the alert names (the actor's)

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        for key in ("start", "end"):
            data[key] = getattr(self, key).isoformat().replace("+00:00", "Z")
        for key, value in data.items():
            if isinstance(value, tuple):
                data[key] = list(value)
        return data

    def is_empty(self) -> bool:
        """No entity at all: nothing to filter the evidence by."""
        return not any(isinstance(v, tuple) and v for v in asdict(self).values())
