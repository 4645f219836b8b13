"""`cloudir triage`'s stages: from an alert's scope to collection, verdict and hand-off."""
