"""Atomic output files and JSON records."""

import json
import os
import tempfile
from typing import Any


def write_outputs(out: str, files: dict[str, bytes]) -> None:
    """Write every file atomically (temporary name, then rename); everything is rendered first."""
    os.makedirs(out, exist_ok=True)
    for name, data in files.items():
        fd, tmp = tempfile.mkstemp(prefix=f".{name}.", dir=out)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.chmod(tmp, 0o644)
            os.replace(tmp, os.path.join(out, name))
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise


def to_json(obj: Any) -> bytes:
    return (json.dumps(obj, indent=1) + "\n").encode()
