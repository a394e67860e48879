"""Signing keys: private JWK files on disk, their lifecycle, the signer and the public JWKS.

One file per key (`<kid>.json`, mode 0600), `kid` = RFC 7638 thumbprint. Lifecycle (derived from
timestamps, so every instance reading the same directory agrees without coordination):

- published: in the JWKS, not signing yet (a standby key, or a rotation waiting out the
  propagation delay so every verifier's cached JWKS already holds it);
- active: the one key that signs;
- retired: stopped signing, still published until every token it signed has expired;
- expired: no longer published.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import stat
import threading
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import ECKey, JWKRegistry, OKPKey, RSAKey
from joserfc.jws import JWSRegistry

from authserver.errors import Conflict, NotFound

log = logging.getLogger(__name__)

KeyState = Literal["published", "active", "retired", "expired"]
META = "authserver"
_PUBLIC_MEMBERS = {
    "RSA": ("kty", "n", "e"),
    "EC": ("kty", "crv", "x", "y"),
    "OKP": ("kty", "crv", "x"),
}
# Keys stay published this long beyond the last token they signed, for verifiers' clock skew.
PUBLISH_MARGIN = 60.0


class KeyFileError(Exception):
    """A key file is unreadable, malformed or too widely readable."""


class _SigningRegistry(JWSRegistry):
    """joserfc's registry without the RFC 9864 warning for `EdDSA`.

    We emit `EdDSA` (not `Ed25519`) on purpose: it is what RFC 9068 verifiers in the field know.
    """

    def get_alg(self, name: str) -> Any:
        if self.allowed is not None and name not in self.allowed:
            return super().get_alg(name)
        return self.algorithms[name]


@dataclass(frozen=True, slots=True)
class SigningKey:
    kid: str
    alg: str
    created_at: float
    activate_at: float | None
    retired_at: float | None
    token_lifetime: float | None
    key: Any = field(repr=False, compare=False)
    public_jwk: dict[str, str] = field(repr=False, compare=False)

    def sign(self, claims: Mapping[str, Any], typ: str) -> str:
        """A compact JWS of `claims` with header `{alg, typ, kid}` (one explicit key)."""
        header = {"alg": self.alg, "typ": typ, "kid": self.kid}
        return jwt.encode(header, dict(claims), self.key, registry=_registry(self.alg))

    def verify(self, token: str) -> dict[str, Any]:
        """The claims of a compact JWS this key signed; raises JoseError otherwise."""
        claims: dict[str, Any] = jwt.decode(token, self.key, registry=_registry(self.alg)).claims
        return claims


_REGISTRIES: dict[str, JWSRegistry] = {}


def jws_registry(algorithms: Collection[str]) -> JWSRegistry:
    """A joserfc registry allowing exactly `algorithms` (EdDSA without the RFC 9864 warning)."""
    return _SigningRegistry(algorithms=list(algorithms))


def _registry(alg: str) -> JWSRegistry:
    registry = _REGISTRIES.get(alg)
    if registry is None:
        registry = _REGISTRIES[alg] = jws_registry([alg])
    return registry


@dataclass(frozen=True, slots=True)
class KeyView:
    """A key's place in the lifecycle at one instant."""

    kid: str
    alg: str
    state: KeyState
    created_at: float
    activate_at: float | None
    stops_signing_at: float | None
    unpublish_at: float | None


@dataclass(frozen=True, slots=True)
class KeySnapshot:
    """What the hot path needs, valid until `valid_until`."""

    signer: SigningKey | None
    jwks: bytes
    etag: str
    views: tuple[KeyView, ...]
    valid_until: float
    # Every published key by kid: what our own tokens are verified with (introspection).
    published: Mapping[str, SigningKey] = field(default_factory=dict)


def generate_key(alg: str) -> Any:
    if alg in ("RS256", "PS256"):
        return RSAKey.generate_key(2048, private=True)
    if alg == "ES256":
        return ECKey.generate_key("P-256", private=True)
    if alg == "EdDSA":
        return OKPKey.generate_key("Ed25519", private=True)
    raise ValueError(f"unsupported signing algorithm {alg!r}")


def _write_private(path: Path, data: dict[str, Any]) -> None:
    """Atomically write a 0600 file."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(data, fh, indent=2, sort_keys=True)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


_KEY_TYPES = {"RS256": "RSA", "PS256": "RSA", "ES256": "EC", "EdDSA": "OKP"}


def _time(meta: dict[str, Any], name: str, required: bool = False) -> float | None:
    value = meta.get(name)
    if value is None and not required:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or value != value:
        raise ValueError(f"{META}.{name} must be a number")
    return float(value)


def _load_file(path: Path) -> SigningKey:
    """Read and check one key file; any defect is a KeyFileError naming the file."""
    mode = path.stat().st_mode
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise KeyFileError(
            f"{path} is accessible by group or others (mode {stat.S_IMODE(mode):o}); "
            f"run: chmod 600 {path}"
        )
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        meta = data.pop(META)
        alg = data["alg"]
        if _KEY_TYPES.get(alg) != data.get("kty"):
            raise ValueError(f"alg {alg!r} does not fit kty {data.get('kty')!r}")
        if "d" not in data:
            raise ValueError("not a private key")
        key = JWKRegistry.import_key(data)
        public = {name: data[name] for name in _PUBLIC_MEMBERS[data["kty"]]}
        kid = key.thumbprint()
        created = _time(meta, "created_at", required=True)
        assert created is not None
        loaded = SigningKey(
            kid=kid, alg=alg, created_at=created, activate_at=_time(meta, "activate_at"),
            retired_at=_time(meta, "retired_at"), token_lifetime=_time(meta, "token_lifetime"),
            key=key, public_jwk={**public, "kid": kid, "use": "sig", "alg": alg},
        )
        # A key must sign, and its signature must verify with the public members it publishes
        # (an OKP file whose x does not belong to its d would otherwise load fine).
        check = loaded.sign({}, "check")
        public_key = JWKRegistry.import_key(dict(loaded.public_jwk))
        jwt.decode(check, public_key, registry=_registry(alg))
    except (ValueError, KeyError, TypeError, AttributeError, JoseError) as exc:
        raise KeyFileError(f"{path} is not a private JWK written by authserver: {exc}") from exc
    if data.get("kid") != kid or path.stem != kid:
        raise KeyFileError(f"{path}: kid and file name must be the RFC 7638 thumbprint")
    return loaded


def _file_data(key: SigningKey) -> dict[str, Any]:
    data: dict[str, Any] = key.key.as_dict(private=True)
    data.update({"kid": key.kid, "alg": key.alg, "use": "sig"})
    data[META] = {
        "created_at": key.created_at, "activate_at": key.activate_at,
        "retired_at": key.retired_at, "token_lifetime": key.token_lifetime,
    }
    return data


def compute_snapshot(
    keys: Collection[SigningKey], now: float, token_lifetime: float
) -> KeySnapshot:
    """Derive states, the signer and the JWKS from the keys' timestamps at `now`."""
    # A key retired before it activated never signs.
    scheduled = sorted(
        (k for k in keys if k.activate_at is not None
         and (k.retired_at is None or k.retired_at > k.activate_at)),
        key=lambda k: (k.activate_at, k.created_at),
    )
    stops: dict[str, float | None] = {}
    for index, key in enumerate(scheduled):
        ends = [t for t in (key.retired_at,) if t is not None]
        if index + 1 < len(scheduled):
            ends.append(scheduled[index + 1].activate_at)  # type: ignore[arg-type]
        stops[key.kid] = min(ends) if ends else None
    signer = None
    for key in scheduled:
        stop = stops[key.kid]
        if key.activate_at <= now and (stop is None or now < stop):  # type: ignore[operator]
            signer = key
    changes: list[float] = []
    views: list[KeyView] = []
    for key in sorted(keys, key=lambda k: k.created_at):
        stop = stops.get(key.kid)
        if key.kid in stops:
            # The longest lifetime in force while it signed: a later, shorter setting must
            # not unpublish a key whose long-lived tokens are still out there.
            lifetime = max(token_lifetime, key.token_lifetime or 0.0)
            unpublish = None if stop is None else stop + lifetime + PUBLISH_MARGIN
        else:  # standby, or retired before it ever signed
            unpublish = key.retired_at
        if key is signer:
            state: KeyState = "active"
        elif unpublish is not None and now >= unpublish:
            state = "expired"
        elif key.activate_at is not None and key.activate_at > now and key.kid in stops:
            state = "published"
        elif key.kid in stops:
            state = "retired"
        else:
            state = "published"
        for instant in (key.activate_at, stop, unpublish):
            if instant is not None and instant > now:
                changes.append(instant)
        views.append(KeyView(key.kid, key.alg, state, key.created_at, key.activate_at,
                             stop, unpublish))
    by_kid = {k.kid: k for k in keys}
    published = [by_kid[v.kid].public_jwk for v in views if v.state != "expired"]
    jwks = json.dumps({"keys": published}, separators=(",", ":")).encode()
    etag = '"' + hashlib.sha256(jwks).hexdigest()[:32] + '"'
    return KeySnapshot(signer, jwks, etag, tuple(views), min(changes, default=float("inf")),
                       {v.kid: by_kid[v.kid] for v in views if v.state != "expired"})


class Keyring:
    """The keys directory, its in-memory copy and the current snapshot.

    `snapshot(now)` is the hot-path call: a comparison and an attribute read unless a lifecycle
    instant has passed. `reload()` (run off the event loop) re-reads files when they changed.
    """

    def __init__(self, directory: Path, token_lifetime: float) -> None:
        self.directory = directory
        self.token_lifetime = token_lifetime
        self._keys: tuple[SigningKey, ...] = ()
        self._fingerprint: tuple[tuple[str, int, int, int], ...] = ()
        self._snapshot = compute_snapshot((), 0.0, token_lifetime)
        self._lock = threading.Lock()

    # -- reading -------------------------------------------------------------------------------

    def _listing(self) -> tuple[tuple[str, int, int, int], ...]:
        if not self.directory.is_dir():
            return ()
        entries = []
        for path in sorted(self.directory.glob("*.json")):
            st = path.stat()
            entries.append((path.name, st.st_ino, st.st_mtime_ns, st.st_size))
        return tuple(entries)

    def load(self, now: float) -> bool:
        """Read the directory if it changed; True when the key set changed."""
        listing = self._listing()
        changed = listing != self._fingerprint
        if changed:
            keys = tuple(_load_file(self.directory / entry[0]) for entry in listing)
            with self._lock:
                self._keys, self._fingerprint = keys, listing
                self._snapshot = compute_snapshot(keys, now, self.token_lifetime)
        if self._record_lifetime(now):
            self.load(now)
            return True
        return changed

    def _record_lifetime(self, now: float) -> bool:
        """Write the current token lifetime into the files of keys that sign, or are scheduled
        to, under a longer lifetime than their file records; True when a file was written."""
        states = {v.kid: v.state for v in self.snapshot(now).views}
        written = False
        for key in self._keys:
            if (key.activate_at is not None and states.get(key.kid) in ("active", "published")
                    and (key.token_lifetime or 0.0) < self.token_lifetime):
                updated = replace(key, token_lifetime=self.token_lifetime)
                _write_private(self.directory / f"{key.kid}.json", _file_data(updated))
                written = True
        return written

    def snapshot(self, now: float) -> KeySnapshot:
        snap = self._snapshot
        if now >= snap.valid_until:
            with self._lock:
                snap = self._snapshot = compute_snapshot(self._keys, now, self.token_lifetime)
        return snap

    @property
    def keys(self) -> tuple[SigningKey, ...]:
        return self._keys

    # -- changing (CLI and admin; every instance picks the files up on reload) ----------------

    def _save(self, key: SigningKey, now: float) -> None:
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        _write_private(self.directory / f"{key.kid}.json", _file_data(key))
        self.load(now)

    def generate(self, alg: str, now: float, activate_at: float | None) -> SigningKey:
        """Create a key; published at once, signing from `activate_at` (None: standby)."""
        raw = generate_key(alg)
        kid = raw.thumbprint()
        public = {name: raw.as_dict(private=False)[name] for name in _PUBLIC_MEMBERS[raw.key_type]}
        public.update({"kid": kid, "use": "sig", "alg": alg})
        key = SigningKey(kid, alg, now, activate_at, None, self.token_lifetime, raw, public)
        self._save(key, now)
        return key

    def ensure_signer(self, alg: str, now: float) -> SigningKey | None:
        """First start: when the directory holds no key at all, generate one that signs now.
        Under a file lock: instances starting together on one shared, empty directory would
        otherwise each make a key that signs at once, unknown to the others until they reload."""
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        try:
            fd: int | None = os.open(self.directory / ".generate.lock",
                                     os.O_RDWR | os.O_CREAT, 0o600)
        except OSError:  # a read-only directory: nothing can be generated into it anyway
            fd = None
        try:
            if fd is not None:
                fcntl.flock(fd, fcntl.LOCK_EX)
            self.load(now)
            if self._keys:
                return None
            key = self.generate(alg, now, activate_at=now)
        finally:
            if fd is not None:
                os.close(fd)  # releases the lock
        log.warning(
            "generated a development signing key %s in %s; for production, manage keys "
            "with `authserver keys` and keep the directory private", key.kid, self.directory,
        )
        return key

    def _find(self, kid: str) -> SigningKey:
        for key in self._keys:
            if key.kid == kid:
                return key
        raise NotFound(f"no signing key {kid}")

    def rotate(
        self, alg: str, now: float, propagation_delay: float, kid: str | None = None,
        clock: Callable[[], float] | None = None,
    ) -> SigningKey:
        """Schedule a key (new, or the standby `kid`) to sign once every cache has seen it.

        A new key's delay counts from when its file is in place (`clock()` after writing it),
        not from `now`: loading the other keys, generating an RSA key and fsyncing take long
        enough to eat into a short propagation delay."""
        self.load(now)
        has_signer = self.snapshot(now).signer is not None
        if kid is None:
            if not has_signer:
                return self.generate(alg, now, now)
            key = self.generate(alg, now, None)  # published, standby: on disk from here on
            written = clock() if clock is not None else now
            key = replace(key, activate_at=max(now, written) + propagation_delay)
            self._save(key, written)
            return key
        key = self._find(kid)
        if key.retired_at is not None:
            raise Conflict(f"key {kid} is retired")
        if key.activate_at is not None:
            raise Conflict(f"key {kid} is already scheduled to sign")
        activate = max(now, key.created_at + propagation_delay) if has_signer else now
        key = replace(key, activate_at=activate,
                      token_lifetime=max(key.token_lifetime or 0.0, self.token_lifetime))
        self._save(key, now)
        return key

    def retire(self, kid: str, now: float) -> SigningKey:
        """Stop a key from signing; it stays published until its tokens have expired."""
        self.load(now)
        key = self._find(kid)
        snap = self.snapshot(now)
        if snap.signer is not None and snap.signer.kid == kid:
            raise Conflict(
                f"key {kid} is the active signer; rotate to a new key first, it retires the old "
                "one when it starts signing"
            )
        if key.retired_at is not None:
            return key
        key = replace(key, retired_at=now)
        self._save(key, now)
        return key
