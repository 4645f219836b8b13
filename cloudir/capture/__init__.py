"""Capture: bring evidence from the cloud or the responder's disk into the case."""
