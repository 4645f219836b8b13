"""`cloudir demo`: the whole job against an AWS emulator, with no account and no network.

`run` holds the story (a leaked CI key) and drives capture, timeline, detect and report;
`instance` gives the emulator the compromised EC2 instance and its disk; `container`
plants and captures the compromised container when a Docker engine is reachable.
"""

from cloudir.demo.run import run_demo

__all__ = ["run_demo"]
