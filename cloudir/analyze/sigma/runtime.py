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
