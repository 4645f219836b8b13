"""The DuckDB functions the compiled rules call, registered on each connection that runs them.

pySigma's SQLite backend keeps its runtime beside the backend (`runtime.py`); these are the
DuckDB equivalents: CIDR tests that a plain SQL string compare would get wrong, and the
grant class of a resource policy (`resource_grant`, see cloudir/analyze/policy_grants.py),
which only an IAM policy library can decide.
"""

from __future__ import annotations

import ipaddress
from typing import Any


def cidr_match(address: str | None, network: str) -> bool | None:
    """DuckDB UDF: is `address` inside `network`? DuckDB's inet extension is not built in."""
    if address is None:
        return None
    try:
        return ipaddress.ip_address(address.strip()) in ipaddress.ip_network(network, strict=False)
    except ValueError:
        return False  # not an address (a service name such as "ec2.amazonaws.com")


# Exactly the dotted quads Python's ipaddress accepts (no leading zeros), as an integer.
_OCTET = "(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
IPV4_MACRO = f"""CREATE OR REPLACE TEMP MACRO cloudir_ipv4(a) AS CASE
    WHEN regexp_full_match(trim(a), '{_OCTET}\\.{_OCTET}\\.{_OCTET}\\.{_OCTET}') THEN
        (split_part(trim(a), '.', 1)::UBIGINT << 24) + (split_part(trim(a), '.', 2)::UBIGINT << 16)
        + (split_part(trim(a), '.', 3)::UBIGINT << 8) + split_part(trim(a), '.', 4)::UBIGINT
    END"""


def ipv4_network_sql(value: str, network: Any) -> str:
    """SQL: is `value` an IPv4 address in `network` (an ipaddress.IPv4Network)?

    The same addresses as `cloudir_ipv4(value) BETWEEN low AND high`, in one regular
    expression: the network's fixed octets as text, the values its prefix leaves to a
    partly fixed octet, then any octet. The macro's four splits and casts cost about
    1 us a row, and a rule excluding three private ranges paid them three times on every
    instance-role call of a busy account; the match costs a tenth of that. An address in
    the network holds its fixed octets as text (the macro takes no leading zeros), so a
    substring test of a few ns turns most other rows away first (`contains`, as the
    address may have spaces around it). Where the value is no address it is false, not
    NULL: the same to every rule, whose conditions read NULL as false.
    """
    octets = str(network.network_address).split(".")
    fixed, partial = divmod(network.prefixlen, 8)
    parts = octets[:fixed]
    if partial:
        first = int(octets[fixed])
        parts.append("(" + "|".join(str(v) for v in range(first, first + (1 << 8 - partial))) + ")")
    parts += [_OCTET] * (4 - len(parts))
    pattern = "\\.".join(parts)
    test = f"regexp_full_match(trim({value}), '{pattern}')"
    if not fixed:
        return test
    text = ".".join(octets[: min(fixed, 3)]) + "."  # the last octet ends the text, no dot
    return f"CASE WHEN contains({value}, '{text}') THEN {test} ELSE false END"


def register_functions(con: Any) -> None:
    """Define on `con` what the compiled rules call; needed before a rule is bound or run."""
    # imported here: policyuniverse reads its action catalogue (0.1 s) on import
    from cloudir.analyze.policy_grants import resource_grant

    con.execute(IPV4_MACRO).fetchall()
    con.create_function(
        "cidr_match", cidr_match, ["VARCHAR", "VARCHAR"], "BOOLEAN", null_handling="special"
    )
    # return_null as well as the function's own guard: a row must never stop the scan
    con.create_function(
        "resource_grant",
        resource_grant,
        ["VARCHAR"],
        "VARCHAR",
        null_handling="special",
        exception_handling="return_null",
    )
