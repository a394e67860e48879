"""OAuth protocol handling: client authentication and grants.

The client-credentials path is our own code, not Authlib's grant classes: Authlib's server has no
async integration and its per-request object machinery would cost more than the signature on the
hot path (see docs/architecture.md). Authlib enters here, behind an adapter, with the interactive
flows.
"""
