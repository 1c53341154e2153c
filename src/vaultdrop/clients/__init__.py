"""The edges to the remote APIs: vault and control clients, their transport, signing and XML."""
