"""`cloudir triage`: from an alert to a scoped collection, a verdict and a report."""
