"""authserver: an OAuth 2.1 / OpenID Connect authorization server for machines and agents."""

__version__ = "0.1.0"
