"""Containment: change an account to stop an intruder, on the record and reversibly.

Every action is a plan of `Change`s, each knowing the value it found and the value it
sets. Nothing is changed until the responder says `--yes`; then each change goes to
custody as it lands, so `cloudir respond restore` can put back exactly what was there,
and a run that fails half-way says what was and was not done.
"""
