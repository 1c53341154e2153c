"""What one sandbox instance is: its credentials, data root and behaviour knobs.

One frozen value handed to every component, so the CLI, the launcher and the tests
agree on a single description of a running sandbox.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class SandboxSettings:
    root: Path
    host: str = "127.0.0.1"
    port: int = 8765
    user: str = "demo"
    password: str = "demo-password"
    api_key: str = "demo-key"
    api_secret: str = "demo-secret"
    cdn: int = 1
    storage: str = "sestore3"
    max_size: int = 0  # bytes per uploaded file; 0 = unlimited
    s3_step: float = 0.5  # seconds between queued -> uploading -> complete

    @property
    def storage_root(self) -> Path:
        """ROOT/storage: `aws.upload` paths are relative to it."""
        return self.root / "storage"

    @property
    def user_dir(self) -> Path:
        """Where this account's videos live: ROOT/storage/{storage}/{user}."""
        return self.storage_root / self.storage / self.user
