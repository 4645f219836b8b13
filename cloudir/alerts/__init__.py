"""Security alerts (GuardDuty, Security Hub ASFF) read into one model and scoped.

`cloudir triage` starts here: the alert is read (`read.py`), its scope derived
(`scope.py`), and everything after works from the `Alert` and `Scope` of `model.py`.
This package reads documents only; it imports no capture, analysis or response code.
"""
