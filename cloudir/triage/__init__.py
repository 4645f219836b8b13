"""`cloudir triage`: from one security alert to a scoped collection, a verdict and a report.

The command's stages, each a module with one job, run in this order:

1. read the alert and store it as evidence (`cloudir.alerts.read`);
2. derive its scope: entities and a time window (`cloudir.alerts.scope`);
3. choose a playbook for the alert and collect what it names (`playbook.py`, the shipped
   defaults in `playbooks/*.yml`, and `collect.py`, which runs every step through the
   existing capture code so custody is recorded exactly as `cloudir capture` records it);
4. analyse the case as `cloudir analyze` does (timeline, detect, report);
5. validate the alert against the evidence: a verdict with reasons (`verdict.py`);
6. contain, only when told: the playbook names the containment that fits
   (`containment.py` plans it; `cloudir.respond` carries it out);
7. hand off: one result document, an SNS notification, the case uploaded (`handoff.py`).

`run.py` strings the stages together; `cloudir/cli/triage.py` is the command.
"""
