"""People's side of OAuth: consents, authorization codes, refresh tokens, and the cutoffs
that end a person's tokens (disabling the person, revoking a consent)."""
