"""Signing keys on disk and their lifecycle: published → active → retired → expired."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from joserfc import jwt
from joserfc.jwk import KeySet

from authserver.errors import Conflict
from authserver.keyring import PUBLISH_MARGIN, KeyFileError, Keyring
from tests.conftest import make_settings, running_app

LIFETIME = 3600
T0 = 1_800_000_000.0


def ring(tmp_path: Path) -> Keyring:
    return Keyring(tmp_path / "keys", LIFETIME)


def states(keyring: Keyring, now: float) -> dict[str, str]:
    return {v.kid: v.state for v in keyring.snapshot(now).views}


def published_kids(keyring: Keyring, now: float) -> set[str]:
    return {k["kid"] for k in json.loads(keyring.snapshot(now).jwks)["keys"]}


def signer_file(tmp_path: Path, alg: str) -> tuple[Path, dict[str, Any]]:
    """A first-start key on disk: its file and the file's JSON."""
    key = ring(tmp_path).ensure_signer(alg, T0)
    assert key is not None
    path = tmp_path / "keys" / f"{key.kid}.json"
    return path, json.loads(path.read_text())


def test_first_start_generates_one_private_0600_key(tmp_path: Path) -> None:
    keyring = ring(tmp_path)
    key = keyring.ensure_signer("RS256", T0)
    assert key is not None
    files = list((tmp_path / "keys").glob("*.json"))
    assert [f.name for f in files] == [f"{key.kid}.json"]
    assert files[0].stat().st_mode & 0o777 == 0o600
    assert key.kid == key.key.thumbprint()
    assert keyring.ensure_signer("RS256", T0 + 1) is None  # not twice
    snap = keyring.snapshot(T0)
    assert snap.signer is not None and snap.signer.kid == key.kid
    public = json.loads(snap.jwks)["keys"]
    assert public == [{"kty": "RSA", "n": public[0]["n"], "e": "AQAB", "kid": key.kid,
                       "use": "sig", "alg": "RS256"}]


def test_widely_readable_key_file_is_refused(tmp_path: Path) -> None:
    path, _ = signer_file(tmp_path, "ES256")
    os.chmod(path, 0o644)
    with pytest.raises(KeyFileError, match="chmod 600"):
        ring(tmp_path).load(T0)


def test_tampered_kid_is_refused(tmp_path: Path) -> None:
    path, data = signer_file(tmp_path, "ES256")
    data["kid"] = "something-else"
    path.write_text(json.dumps(data))
    with pytest.raises(KeyFileError, match="thumbprint"):
        ring(tmp_path).load(T0)


# Verifying "EdDSA" with joserfc warns (RFC 9864); the signer emits it on purpose.
@pytest.mark.filterwarnings("ignore:EdDSA is deprecated")
@pytest.mark.parametrize("alg", ["RS256", "ES256", "EdDSA", "PS256"])
def test_every_algorithm_signs_and_verifies(tmp_path: Path, alg: str) -> None:
    keyring = ring(tmp_path)
    key = keyring.ensure_signer(alg, T0)
    assert key is not None
    token = key.sign({"sub": "x"}, "at+jwt")
    keys = KeySet.import_key_set(json.loads(keyring.snapshot(T0).jwks))
    decoded = jwt.decode(token, keys, algorithms=[alg])
    assert decoded.header == {"alg": alg, "typ": "at+jwt", "kid": key.kid}


def test_rotation_publishes_first_signs_later_and_keeps_the_old_key(tmp_path: Path) -> None:
    keyring = ring(tmp_path)
    old = keyring.ensure_signer("RS256", T0)
    assert old is not None
    delay = 600
    etag_before = keyring.snapshot(T0 + 10).etag
    new = keyring.rotate("RS256", T0 + 10, delay)
    assert new.activate_at == T0 + 10 + delay
    # published at once, not signing yet
    assert published_kids(keyring, T0 + 11) == {old.kid, new.kid}
    assert keyring.snapshot(T0 + 11).etag != etag_before
    assert states(keyring, T0 + 11) == {old.kid: "active", new.kid: "published"}
    signer = keyring.snapshot(T0 + 10 + delay - 1).signer
    assert signer is not None and signer.kid == old.kid
    # after the delay the new key signs; the old one stays published for its tokens
    switch = T0 + 10 + delay
    signer = keyring.snapshot(switch).signer
    assert signer is not None and signer.kid == new.kid
    assert states(keyring, switch) == {old.kid: "retired", new.kid: "active"}
    last_old_token_expiry = switch + LIFETIME
    assert old.kid in published_kids(keyring, last_old_token_expiry)
    gone = switch + LIFETIME + PUBLISH_MARGIN
    assert published_kids(keyring, gone) == {new.kid}
    assert states(keyring, gone)[old.kid] == "expired"


def test_retire_refuses_the_active_signer(tmp_path: Path) -> None:
    keyring = ring(tmp_path)
    key = keyring.ensure_signer("RS256", T0)
    assert key is not None
    with pytest.raises(Conflict, match="rotate"):
        keyring.retire(key.kid, T0 + 1)


def test_standby_key_promoted_by_rotate_kid(tmp_path: Path) -> None:
    keyring = ring(tmp_path)
    keyring.ensure_signer("RS256", T0)
    standby = keyring.generate("ES256", T0 + 100, activate_at=None)
    assert states(keyring, T0 + 101)[standby.kid] == "published"
    # published long enough already: it may sign at once
    promoted = keyring.rotate("RS256", T0 + 2000, 600, kid=standby.kid)
    assert promoted.activate_at == T0 + 2000
    signer = keyring.snapshot(T0 + 2000).signer
    assert signer is not None and signer.kid == standby.kid and signer.alg == "ES256"


def test_retired_standby_key_never_signs_and_is_unpublished(tmp_path: Path) -> None:
    keyring = ring(tmp_path)
    keyring.ensure_signer("RS256", T0)
    standby = keyring.generate("RS256", T0 + 1, activate_at=None)
    keyring.retire(standby.kid, T0 + 5)
    assert standby.kid not in published_kids(keyring, T0 + 6)
    with pytest.raises(Conflict):
        keyring.rotate("RS256", T0 + 7, 600, kid=standby.kid)


def test_changes_by_another_process_are_picked_up_on_load(tmp_path: Path) -> None:
    server_ring = ring(tmp_path)
    server_ring.ensure_signer("RS256", T0)
    cli_ring = ring(tmp_path)
    new = cli_ring.rotate("RS256", T0 + 1, 0)
    assert server_ring.load(T0 + 2) is True
    signer = server_ring.snapshot(T0 + 2).signer
    assert signer is not None and signer.kid == new.kid
    assert server_ring.load(T0 + 3) is False


@pytest.mark.anyio
async def test_a_get_never_creates_keys(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, signing={"generate_if_missing": False})
    async with running_app(settings) as h:
        jwks = await h.http.get("/.well-known/jwks.json")
        assert jwks.status_code == 200
        assert jwks.json() == {"keys": []}
        response = await h.http.post("/token", data={"grant_type": "client_credentials"})
        assert response.status_code == 401  # authentication comes first
    assert not list(tmp_path.glob("keys/*.json"))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d.update({"authserver": {}}), "created_at"),
        (lambda d: d["authserver"].update({"activate_at": "soon"}), "number"),
        (lambda d: d.update({"alg": "ES256"}), "does not fit"),
        (lambda d: d.pop("d"), "not a private key"),
        (lambda d: d.update({"n": "AQAB"}), "private JWK"),
    ],
)
def test_defective_key_files_are_refused_with_the_file_named(
    tmp_path: Path, change: object, message: str
) -> None:
    path, data = signer_file(tmp_path, "RS256")
    change(data)  # type: ignore[operator]
    path.write_text(json.dumps(data))
    with pytest.raises(KeyFileError, match=message):
        ring(tmp_path).load(T0)


def test_a_shorter_lifetime_later_does_not_unpublish_early(tmp_path: Path) -> None:
    long_ring = Keyring(tmp_path / "keys", 86400)
    old = long_ring.ensure_signer("RS256", T0)
    assert old is not None
    new = long_ring.rotate("RS256", T0 + 1, 0)
    short_ring = Keyring(tmp_path / "keys", 3600)  # lifetime lowered, server restarted
    short_ring.load(T0 + 2)
    assert old.kid in published_kids(short_ring, T0 + 1 + 3600 + PUBLISH_MARGIN + 10)
    assert published_kids(short_ring, T0 + 1 + 86400 + PUBLISH_MARGIN) == {new.kid}


def test_okp_file_whose_public_half_does_not_match_is_refused(tmp_path: Path) -> None:
    from joserfc.jwk import OKPKey

    path, data = signer_file(tmp_path, "EdDSA")
    other = OKPKey.generate_key("Ed25519", private=True)
    data["x"] = other.as_dict()["x"]  # someone else's public half, our private half
    data["kid"] = OKPKey.import_key({"kty": "OKP", "crv": "Ed25519", "x": data["x"]}).thumbprint()
    path.unlink()
    new_path = tmp_path / "keys" / f"{data['kid']}.json"
    new_path.write_text(json.dumps(data))
    new_path.chmod(0o600)
    with pytest.raises(KeyFileError):
        ring(tmp_path).load(T0)


def test_a_lifetime_raised_while_signing_is_written_down(tmp_path: Path) -> None:
    short = Keyring(tmp_path / "keys", 3600)
    old = short.ensure_signer("RS256", T0)
    assert old is not None
    long_ring = Keyring(tmp_path / "keys", 86400)  # restarted with a longer lifetime
    long_ring.load(T0 + 1)
    assert {k.kid: k.token_lifetime for k in long_ring.keys}[old.kid] == 86400
    new = long_ring.rotate("RS256", T0 + 2, 0)
    again_short = Keyring(tmp_path / "keys", 3600)  # and back: old tokens still live a day
    again_short.load(T0 + 3)
    assert old.kid in published_kids(again_short, T0 + 2 + 86400)
    assert published_kids(again_short, T0 + 2 + 86400 + PUBLISH_MARGIN) == {new.kid}


def test_the_delay_counts_from_when_the_new_key_file_is_in_place(tmp_path: Path) -> None:
    """Writing the key takes time (load, RSA generation, fsync): the new key signs
    `propagation_delay` after its file exists, not after rotation began."""
    keyring = ring(tmp_path)
    assert keyring.ensure_signer("RS256", T0) is not None
    new = keyring.rotate("RS256", T0 + 10, 2, clock=lambda: T0 + 10.8)
    assert new.activate_at == T0 + 12.8
    again = ring(tmp_path)  # what another instance reads from disk
    again.load(T0 + 11)
    assert states(again, T0 + 12.7)[new.kid] == "published"
    signer = again.snapshot(T0 + 12.8).signer
    assert signer is not None and signer.kid == new.kid


def test_instances_starting_together_on_an_empty_directory_make_one_key(tmp_path: Path) -> None:
    import threading
    import time

    barrier = threading.Barrier(4)
    made: list[object] = []

    def start() -> None:
        keyring = Keyring(tmp_path / "shared", 3600)
        barrier.wait()
        made.append(keyring.ensure_signer("ES256", time.time()))

    threads = [threading.Thread(target=start) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert len([m for m in made if m is not None]) == 1
    assert len(list((tmp_path / "shared").glob("*.json"))) == 1
