"""Stand-ins for the harness's inputs, shared by the unit and input tests (not tests themselves)."""

from __future__ import annotations

import json
from pathlib import Path


def fake_image(image: Path, **manifest: object) -> Path:
    """A complete, private image directory whose files are placeholders: enough for the session check."""
    (image / "ssh").mkdir(parents=True)
    (image / "manifest.json").write_text(json.dumps({"arch": "x86_64", "kernel": "kernel",
                                                     "initrd": "initramfs.cpio", "cmdline": "", **manifest}))
    for name in ("kernel", "initramfs.cpio", "ssh/id_ed25519", "ssh/host_key.pub", "ssh/dropbear_ed25519_host_key"):
        (image / name).write_text("x")
        (image / name).chmod(0o600)
    return image
