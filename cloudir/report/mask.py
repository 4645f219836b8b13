"""Secrets never leave the laptop in a report: mask them in every string we render.

A report is forwarded to people and systems that must not receive live credentials, yet
raw events can carry them (a secret access key in a CreateAccessKey response copied by a
tool, a session token in a request header, a password typed on a command line and kept
in a shell history). Only the report masks: the evidence and the timeline keep every
byte, so an examiner can still read the secret in the case itself.

Masking works on three levels:

1. by key name anywhere in a JSON document (`secretAccessKey`, `token`, `pwd`...);
2. by value shape in any text, with the rule set of detect-secrets (Yelp, pinned in
   pyproject): its keyword, basic-auth, JWT and vendor-token detectors, used as plain
   regular expressions (never its `verify`, which would call the vendors' APIs), plus a
   few named AWS and command-line rules below that it does not have;
3. every secret found by 1 or 2 that looks like a credential is then masked wherever
   else it appears in the same report (the secret under a key in one event and bare in
   a shell history line of another).

Access key ids (AKIA..., ASIA...) are not secrets and stay: responders pivot on them.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from functools import cache
from typing import Any

MASK = "[masked]"

# Keys whose value is a secret, matched on the key lowercased with separators removed
# (secretAccessKey, secret_access_key, SecretString, x-amz-security-token, pwd...).
_SECRET_KEY_SUFFIXES = re.compile(
    r"(secretaccesskey|secretkey|sessiontoken|securitytoken|password|passwd|passphrase|"
    r"secretstring|secretbinary|privatekey|clientsecret|apikey|authorization|"
    r"(?:access|refresh|id|auth|bearer|api|oauth|csrf|github|slack)token)$"
)
_SECRET_KEYS_EXACT = frozenset({"token", "pwd", "pass", "secret", "credential", "cookie"})

_B64 = r"A-Za-z0-9/+="
_NOT_B64 = rf"(?![{_B64}])"

# Named rules for what detect-secrets does not cover. Each captures the secret as the
# group named "secret"; the text around it stays, so a reader sees what was masked.
NAMED_RULES: dict[str, re.Pattern[str]] = {
    # aws_secret_access_key=X, AWS_SECRET_ACCESS_KEY X (aws configure set ..., env dumps),
    # aws_session_token: X, X-Amz-Security-Token: X (an HTTP header), ...=X in a URL
    "aws-credential-assignment": re.compile(
        r"(?i)(?:x-amz-|aws_?)?(?:secret_?access_?key|secret_?key|session_?token|"
        r"security_?token|security-token)[\"']?(?:\s*[=:]\s*|\s+)[\"']?"
        rf"(?P<secret>[{_B64}%]{{16,}})"
    ),
    # STS session tokens by their fixed base64 prefix, wherever they stand
    "aws-sts-token": re.compile(
        rf"(?P<secret>(?:AQoDYXdz|AQoEXAMPLE|FQoGZXIvYXdz|FwoGZXIvYXdz|IQoJb3JpZ2lu)[{_B64}]{{16,}})"
    ),
    # a 40-character secret access key next to its access key id (a credentials CSV,
    # `aws configure list` output, a pasted pair); a 40-digit hex digest is not one
    "aws-secret-beside-key-id": re.compile(
        r"\b(?:AKIA|ASIA)[A-Z0-9]{16}[\s,;:|\"'=]{1,6}"
        r"(?P<secret>(?![0-9a-f]{40}(?![A-Za-z0-9/+]))[A-Za-z0-9/+]{40})(?![A-Za-z0-9/+])"
    ),
    "aws-secret-before-key-id": re.compile(
        r"(?<![A-Za-z0-9/+])(?P<secret>(?![0-9a-f]{40}[^A-Za-z0-9/+])[A-Za-z0-9/+]{40})"
        r"[\s,;:|\"'=]{1,6}(?:AKIA|ASIA)[A-Z0-9]{16}\b"
    ),
    # a request signature (a presigned URL works until it expires)
    "aws-signature": re.compile(r"(?i)(?:x-amz-)?signature=(?P<secret>[0-9a-f]{64})"),
    # --password VALUE, --secret-key=VALUE, --token VALUE on a command line
    "cli-secret-option": re.compile(
        r"(?i)(?<![\w-])--?(?:password|passwd|pwd|pass|passphrase|secret|secret-key|"
        r"secret-access-key|session-token|token|api-key|client-secret|private-key)"
        r"(?:=|\s+)[\"']?(?P<secret>[^\s\"']{3,})"
    ),
    # password=X, pwd: X, secret=X where detect-secrets' keyword rules want the value to
    # start with a letter or digit (a password may start with any character)
    "secret-assignment": re.compile(
        r"(?i)\b(?:password|passwd|pwd|passphrase|secret|client_secret|api_?key|token)"
        r"[\"']?\s*[=:]\s*[\"']?(?P<secret>[^\s\"'&,;]{3,})"
    ),
    # Authorization: Basic X / Bearer X / X (HTTP headers, curl -H, logged requests)
    "http-authorization": re.compile(
        r"(?i)\b(?:proxy-)?authorization[\"']?\s*[:=]\s*[\"']?"
        r"(?:(?:basic|bearer|digest|token|negotiate|ntlm)\s+)?"
        r"(?P<secret>[A-Za-z0-9._~+/=:-]{6,})"
    ),
    # PEM private keys, to the END line or the end of the text
    "pem-private-key": re.compile(
        r"(?P<secret>-----BEGIN [A-Z ]*PRIVATE KEY-----.*?(?:-----END [A-Z ]*PRIVATE KEY-----|$))",
        re.S,
    ),
}

# A keyword rule (password: X, secret=X) whose word names a thing rather than holding a
# secret: `secretsmanager:GetSecretValue`, `SecretId: prod/db`, `passwordLastUsed: ...`.
_KEYWORD_NAMES_A_THING = re.compile(
    r"(?i)(?:manager|id|ids|arn|arns|name|names|type|policy|version|versionid|"
    r"lastused|lastchanged|required|reset|length|age|expired|enabled|status|hint|prompt|"
    r"secrets|passwords|keys)$"
)
# A secret found once is masked everywhere in the report only if it looks like a
# credential: long, no spaces, not a path (a `pwd` key may hold /home/alice).
_JWT_TAIL = re.compile(r"[A-Za-z0-9_.+/=-]*")
_CREDENTIAL_SHAPE = re.compile(r"(?=[^/].*\d)(?=.*[A-Za-z])[^\s\"'<>]{12,}")


@cache
def _detectors() -> tuple[list[tuple[re.Pattern[str], int]], list[Any]]:
    """detect-secrets' rules as (pattern, secret group) pairs, plus its JWT validator."""
    from detect_secrets.plugins import (
        basic_auth,
        discord,
        github_token,
        gitlab_token,
        jwt,
        keyword,
        mailchimp,
        npm,
        openai,
        pypi_token,
        sendgrid,
        slack,
        stripe,
        telegram_token,
        twilio,
    )
    from detect_secrets.plugins.aws import AWSKeyDetector

    keyword_rules = {
        **keyword.QUOTES_REQUIRED_DENYLIST_REGEX_TO_GROUP,
        **keyword.CONFIG_DENYLIST_REGEX_TO_GROUP,
    }
    rules: list[tuple[re.Pattern[str], int]] = list(keyword_rules.items())
    # AWSKeyDetector's first pattern is the access key *id*: ids stay visible.
    rules.append((AWSKeyDetector.denylist[1], 1))
    # each sets `denylist` as a class attribute, where the base class declares a property
    vendors: list[Any] = [
        basic_auth.BasicAuthDetector,
        discord.DiscordBotTokenDetector,
        github_token.GitHubTokenDetector,
        gitlab_token.GitLabTokenDetector,
        mailchimp.MailchimpDetector,
        npm.NpmDetector,
        openai.OpenAIDetector,
        pypi_token.PypiTokenDetector,
        sendgrid.SendGridDetector,
        slack.SlackDetector,
        stripe.StripeDetector,
        telegram_token.TelegramBotTokenDetector,
        twilio.TwilioKeyDetector,
    ]
    for detector in vendors:
        for pattern in detector.denylist:
            rules.append((pattern, 1 if pattern.groups else 0))
    jwt_rules = [(p, jwt.JwtTokenDetector.is_formally_valid) for p in jwt.JwtTokenDetector.denylist]
    return rules, jwt_rules


def _keyword_names_a_thing(match: re.Match[str]) -> bool:
    """The keyword rules' word (group 1 plus its \\w* suffix) names a thing, or the match
    sits inside an ARN (`arn:aws:secretsmanager:...:secret:prod/db`)."""
    text = match.string
    word_end = match.start(1) + len(match.group(1))
    while word_end < len(text) and (text[word_end].isalnum() or text[word_end] == "_"):
        word_end += 1
    word = text[match.start(1) : word_end]
    return bool(_KEYWORD_NAMES_A_THING.search(word)) or _in_arn(match)


def _in_arn(match: re.Match[str]) -> bool:
    """The match is part of an ARN (`arn:aws:secretsmanager:...:secret:prod/db`)."""
    text = match.string
    token_start = max(text.rfind(c, 0, match.start()) for c in " \t\r\n\"'=,") + 1
    return text.startswith("arn:", token_start)


def secret_spans(text: str) -> Iterator[tuple[int, int]]:
    """Where the secrets in `text` are, by every rule; spans may overlap."""
    for name, pattern in NAMED_RULES.items():
        for match in pattern.finditer(text):
            if name == "secret-assignment" and _in_arn(match):
                continue
            yield match.span("secret")
    rules, jwt_rules = _detectors()
    keyword_patterns = _keyword_patterns()
    for pattern, group in rules:
        for match in pattern.finditer(text):
            if pattern in keyword_patterns and _keyword_names_a_thing(match):
                continue
            if match.group(group):
                yield match.span(group)
    for pattern, is_valid in jwt_rules:
        for match in pattern.finditer(text):  # its pattern stops early: take the signature too
            end = _JWT_TAIL.match(text, match.end()).end()  # type: ignore[union-attr]
            if is_valid(text[match.start() : end]):
                yield match.start(), end


@cache
def _keyword_patterns() -> frozenset[re.Pattern[str]]:
    from detect_secrets.plugins import keyword

    return frozenset(
        [*keyword.QUOTES_REQUIRED_DENYLIST_REGEX_TO_GROUP, *keyword.CONFIG_DENYLIST_REGEX_TO_GROUP]
    )


def _merged(spans: Iterator[tuple[int, int]]) -> list[tuple[int, int]]:
    merged: list[tuple[int, int]] = []
    for start, end in sorted(s for s in spans if s[1] > s[0]):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(end, merged[-1][1]))
        else:
            merged.append((start, end))
    return merged


def _mask_spans(text: str, found: set[str] | None = None) -> str:
    spans = _merged(secret_spans(text))
    if not spans:
        return text
    parts, last = [], 0
    for start, end in spans:
        if found is not None:
            found.add(text[start:end])
        parts += [text[last:start], MASK]
        last = end
    parts.append(text[last:])
    return "".join(parts)


def mask_text(text: str) -> str:
    """`text` with every secret the rules find replaced by MASK."""
    return _mask_spans(text)


def is_secret_key(key: str) -> bool:
    name = re.sub(r"[^a-z]", "", key.lower())
    return name in _SECRET_KEYS_EXACT or bool(_SECRET_KEY_SUFFIXES.search(name))


def mask_document(value: Any) -> Any:
    """A copy of a parsed JSON document with every secret replaced by MASK.

    Two passes: the first masks by key and by shape and collects what it masked; the
    second masks each collected credential-shaped secret wherever else it appears.
    """
    found: set[str] = set()
    masked = _first_pass(value, found)
    everywhere = sorted(
        {s for s in found if _CREDENTIAL_SHAPE.fullmatch(s) and MASK not in s},
        key=len,
        reverse=True,
    )
    if not everywhere:
        return masked
    pattern = re.compile("|".join(map(re.escape, everywhere)))
    return _replace_everywhere(masked, pattern)


def _first_pass(value: Any, found: set[str]) -> Any:
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            key = _mask_spans(k, found) if isinstance(k, str) else k
            if is_secret_key(str(k)) and v not in (None, "", [], {}):
                found.update(_strings(v))
                out[key] = MASK
            else:
                out[key] = _first_pass(v, found)
        return out
    if isinstance(value, list):
        return [_first_pass(v, found) for v in value]
    if isinstance(value, str):
        return _mask_spans(value, found)
    return value


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for v in value.values():
            yield from _strings(v)
    elif isinstance(value, list):
        for v in value:
            yield from _strings(v)


def _replace_everywhere(value: Any, pattern: re.Pattern[str]) -> Any:
    if isinstance(value, dict):
        return {
            (pattern.sub(MASK, k) if isinstance(k, str) else k): _replace_everywhere(v, pattern)
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [_replace_everywhere(v, pattern) for v in value]
    if isinstance(value, str):
        return pattern.sub(MASK, value)
    return value
