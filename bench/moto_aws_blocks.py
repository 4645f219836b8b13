"""moto's server, listing EBS snapshots with AWS's 512 KiB BlockSize instead of 512.

moto stores whatever block size the client wrote but reports 512 in ListSnapshotBlocks;
the benchmark needs the listing AWS gives. Arguments are moto_server's.
"""

from __future__ import annotations

import sys
from typing import Any

import moto.ebs.models
from moto.server import main

AWS_BLOCK_SIZE = 524288
_original_init = moto.ebs.models.EBSSnapshot.__init__


def _init_with_aws_block_size(self: Any, *args: Any, **kwargs: Any) -> None:
    _original_init(self, *args, **kwargs)
    self.block_size = AWS_BLOCK_SIZE


moto.ebs.models.EBSSnapshot.__init__ = _init_with_aws_block_size  # type: ignore[method-assign]

if __name__ == "__main__":
    sys.exit(main())
