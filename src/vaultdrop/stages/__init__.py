"""The stages a job passes: start, upload and confirm in the vault, S3, then the post-action."""
