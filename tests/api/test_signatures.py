"""Signed ingest requests cannot be replayed: the HMAC covers a time with the body, a time
too far from onduty's clock is refused, and a signed request already received within the
tolerance is refused; the body-only scheme is only for credentials that ask for it."""

from __future__ import annotations

from typing import Any

import pytest

from onduty.api.auth import Access, parse_access, sign, sign_body
from onduty.api.signatures import ReplayWindow, parse_signature, timestamped_digest

BODY = b'{"source": "x", "fingerprint": "f", "status": "firing"}'
NOW = 1_800_000_000.0
RAW: dict[str, Any] = {
    "tokens": [{"name": "root", "roles": ["admin"], "hash": "sha256:" + "0" * 64}],
    "ingest": [
        {"name": "ce", "hmac_secret": "${ENV:CE}"},
        {"name": "legacy", "hmac_secret": "${ENV:OLD}", "signature": "body"},
    ],
    "signatures": {"tolerance": "5m"},
}
ENV = {"CE": "s3cret", "OLD": "old-s3cret"}


class WallClock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> WallClock:
    return WallClock()


@pytest.fixture
def access(clock: WallClock) -> Access:
    return Access(parse_access(RAW), env=ENV, wall_clock=clock)


def test_a_fresh_signature_names_its_sender_once(access: Access) -> None:
    signed = sign("s3cret", BODY, timestamp=int(NOW))
    first = access.ingest_signature(BODY, signed)
    assert first.source is not None and first.source.name == "ce"
    again = access.ingest_signature(BODY, signed)  # a captured request sent again
    assert again.source is None and again.status == 409
    assert "already received" in again.problem


def test_a_refused_request_may_be_sent_again(access: Access) -> None:
    signed = sign("s3cret", BODY, timestamp=int(NOW))
    first = access.ingest_signature(BODY, signed)
    assert first.delivery is not None
    access.replays.forget(first.delivery)  # the server answered 503: the sender retries
    assert access.ingest_signature(BODY, signed).source is not None


@pytest.mark.parametrize(
    ("offset", "accepted", "words"),
    [
        (0, True, ""),
        (-299, True, ""),  # the sender's clock a little behind, or a slow network
        (299, True, ""),
        (-301, False, "301s behind onduty's clock, beyond the tolerance of 5m"),
        (301, False, "301s ahead of onduty's clock"),
        (-86_400, False, "1d behind"),
    ],
)
def test_the_time_signed_must_be_near_onduty_s_clock(
    access: Access, offset: int, accepted: bool, words: str
) -> None:
    check = access.ingest_signature(BODY, sign("s3cret", BODY, timestamp=int(NOW) + offset))
    assert (check.source is not None) is accepted
    if not accepted:
        assert check.status == 401 and words in check.problem


def test_the_time_is_part_of_what_is_signed(access: Access) -> None:
    old = int(NOW) - 3600
    digest = timestamped_digest(b"s3cret", old, BODY).hex()
    moved = f"t={int(NOW)},v1={digest}"  # an old capture with a fresh time pasted in
    check = access.ingest_signature(BODY, moved)
    assert check.source is None and check.problem == ""


@pytest.mark.parametrize(
    "header",
    [
        "",
        "t=abc,v1=00",
        f"t={int(NOW)}",
        f"v1={'0' * 64}",
        f"t={int(NOW)},v1=zz",
        "sha1=" + "0" * 40,
    ],
)
def test_a_malformed_header_is_refused_saying_what_is_expected(access: Access, header: str) -> None:
    check = access.ingest_signature(BODY, header)
    assert check.source is None and "t=<time>,v1=<hex>" in check.problem


def test_wrong_key_or_tampered_body_is_unknown(access: Access) -> None:
    at = int(NOW)
    assert access.ingest_signature(BODY, sign("guess", BODY, timestamp=at)).source is None
    tampered = access.ingest_signature(BODY + b" ", sign("s3cret", BODY, timestamp=at))
    assert tampered.source is None and tampered.problem == ""


def test_a_rotating_sender_may_sign_with_two_secrets(access: Access) -> None:
    at = int(NOW)
    new = timestamped_digest(b"s3cret", at, BODY).hex()
    retired = timestamped_digest(b"retired", at, BODY).hex()
    check = access.ingest_signature(BODY, f"t={at},v1={retired},v1={new}")
    assert check.source is not None and check.source.name == "ce"


def test_body_only_signatures_only_for_credentials_that_ask(access: Access) -> None:
    legacy = access.ingest_signature(BODY, sign_body("old-s3cret", BODY))
    assert legacy.source is not None and legacy.source.name == "legacy"
    # it cannot tell a replay: that is why it must be asked for, and serve warns
    assert access.ingest_signature(BODY, sign_body("old-s3cret", BODY)).source is not None
    assert access.warnings == [
        "access.ingest[1] (legacy): signature: body: a captured request can be sent again; "
        "use timestamped signatures when the sender can"
    ]
    downgraded = access.ingest_signature(BODY, sign_body("s3cret", BODY))
    assert downgraded.source is None and "ce must sign with a time" in downgraded.problem


def test_body_only_is_refused_for_a_token() -> None:
    raw = {"ingest": [{"name": "t", "hash": "sha256:" + "1" * 64, "signature": "body"}]}
    with pytest.raises(ValueError, match="signature: body applies to an hmac_secret"):
        parse_access(raw)


def test_the_replay_window_forgets_in_arrival_order_and_stays_bounded() -> None:
    window = ReplayWindow(300.0, capacity=3)
    assert window.first_time(b"a", 0.0) and not window.first_time(b"a", 599.0)
    assert window.first_time(b"a", 601.0)  # past arrival + 2 x tolerance: forgotten
    for name in (b"b", b"c", b"d"):
        assert window.first_time(name, 602.0)
    assert len(window) == 3  # the oldest made room


def test_parse_signature_reads_both_schemes() -> None:
    stamped = parse_signature(f"t=5, v1={'ab' * 32}")
    assert stamped is not None and stamped.timestamp == 5 and stamped.digests == (b"\xab" * 32,)
    body = parse_signature("SHA256=" + "cd" * 32)
    assert body is not None and body.timestamp is None
