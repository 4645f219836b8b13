"""cloudir: incident response for the cloud."""

__version__ = "0.1.0"
