"""vaultdrop: folders in, videos in the vault, exactly once."""

__version__ = "0.1.0"
