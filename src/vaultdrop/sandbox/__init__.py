"""A local stand-in for SesameVault and the ScaleEngine control API, wire-faithful to API.md.

The real services are unreachable from development and CI, so the daemon is tested
against this server. It verifies signatures with the daemon's own signing code, streams
uploads to disk with live progress, runs the S3 queue, and takes scripted faults.
`launcher.spawn_sandbox` runs it as a subprocess; `cli` serves it from the command line.
"""
