"""What every collector store engine must do: one list of cases, run against each engine.

A feature that adds a table or a message to the store adds its case here; it then runs on
SQLite in ``tests/test_collector_store.py`` and on PostgreSQL in ``tests/test_collector_pg.py``.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable

from agent.collector import auth
from agent.collector.store import Store, Upload


def _upload(device: str, seq: int, length: int = 100, sha: str = "a" * 64) -> Upload:
    return Upload(secrets.token_hex(16), device, f"{device}-{seq:08d}", seq, sha, length, 0,
                  "open", 1000.0, 2000.0, "", "")


def case_devices_and_tokens(store: Store) -> None:
    t1 = auth.enroll(store, "dev-1", first_seq=5)
    assert auth.authenticate(store, f"Bearer {t1}").device == "dev-1"
    t2 = auth.enroll(store, "dev-1", first_seq=7)  # re-enrolling replaces the token
    assert store.token(auth.hash_token(t1)) is None
    assert auth.authenticate(store, f"Bearer {t2}").role == "device"
    d = store.device("dev-1")
    assert d is not None and d.first_seq == 7
    auth.enroll(store, "dev-0")
    assert [x.id for x in store.devices()] == ["dev-0", "dev-1"]
    admin = auth.admin_token(store)
    reader = auth.role_token(store, "reader")
    assert auth.authenticate(store, f"Bearer {admin}").is_admin
    assert auth.authenticate(store, f"Bearer {reader}").role == "reader"
    admin2 = auth.admin_token(store)
    assert store.token(auth.hash_token(admin)) is None
    assert store.token(auth.hash_token(admin2)) is not None
    assert store.token(auth.hash_token(reader)) is not None  # roles are independent
    assert store.revoke("dev-1") and not store.revoke("dev-1")
    assert store.token(auth.hash_token(t2)) is None
    assert store.device("nope") is None


def case_uploads_and_offsets(store: Store) -> None:
    auth.enroll(store, "d")
    up = _upload("d", 3)
    assert store.insert_upload(up, {"seq": 3})
    assert store.upload(up.id) == up
    # a second live upload of the same segment loses, and writes nothing
    rival = _upload("d", 3)
    assert not store.insert_upload(rival, {})
    assert store.upload(rival.id) is None
    assert store.find_segment("d", up.segment_id) == up
    # compare-and-set on the offset: a stale writer cannot move it
    assert store.set_offset(up.id, 40, "open", 3000.0, expect=0)
    assert not store.set_offset(up.id, 50, "open", 3000.0, expect=0)
    got = store.upload(up.id)
    assert got is not None and got.offset == 40 and got.expires == 3000.0
    assert store.set_offset(up.id, 100, "complete", 3000.0, expect=40)
    assert [u.id for u in store.unfinished()] == [up.id]
    store.set_verified(up.id, "local", "d/d-00000003.mcap", 4000.0)
    got = store.upload(up.id)
    assert got is not None and got.state == "verified" and got.expires is None
    assert got.verified_at == 4000.0 and got.object_key == "d/d-00000003.mcap"
    assert store.unfinished() == []
    # an expired upload frees the segment for a new one
    other = _upload("d", 4)
    assert store.insert_upload(other, {})
    store.set_state(other.id, "expired")
    assert store.find_segment("d", other.segment_id) is None
    again = _upload("d", 4)
    assert store.insert_upload(again, {})
    assert sorted(store.segment_rows("d")) == [(3, "verified", 100), (4, "expired", 100),
                                               (4, "open", 100)]
    store.delete_upload(again.id)
    assert store.upload(again.id) is None


def case_large_numbers(store: Store) -> None:
    """Sequence numbers and sizes up to 2^63-1 are stored exactly."""
    big = 2**63 - 1
    auth.enroll(store, "big", first_seq=big)
    d = store.device("big")
    assert d is not None and d.first_seq == big
    up = _upload("big", big, length=big)
    assert store.insert_upload(up, {})
    got = store.upload(up.id)
    assert got is not None and got.seq == big and got.length == big


def case_documents(store: Store) -> None:
    store.put_document("selftest", "d1", "2026-01-01", {"ok": True, "n": 1}, 1.0)
    store.put_document("selftest", "d1", "2026-01-01", {"ok": False, "n": 2}, 2.0)
    store.put_document("selftest", "d2", "x", {"ok": True}, 3.0)
    store.put_document("status", "d1", "latest", {"battery": 0.5}, 4.0)
    docs = store.documents("selftest")
    assert [(d.device, d.key, d.body["ok"]) for d in docs] == [("d1", "2026-01-01", False),
                                                               ("d2", "x", True)]
    assert [d.body for d in store.documents("status", "d1")] == [{"battery": 0.5}]
    assert store.documents("status", "d2") == []


def store_contract_cases() -> list[Callable[[Store], None]]:
    return [case_devices_and_tokens, case_uploads_and_offsets, case_large_numbers,
            case_documents, case_enrollment_codes, case_reader_role_and_device_uploads,
            case_tombstones, case_exports, case_verified_before]


def case_exports(store: Store) -> None:
    from agent.collector.store import Export

    a = Export("d", "d-00000002-00000005", "mcap", 2, 5, "local", "_exports/d/a.mcap", 10, 1.0)
    b = Export("d", "d-00000006", "mp4", 6, 6, "s3", "p/_exports/d/b.mp4", 20, 2.0)
    store.put_export(a)
    store.put_export(b)
    store.put_export(Export("e", "e-00000002", "mcap", 2, 2, "local", "k", 1, 3.0))
    assert store.export("d", a.take, "mcap") == a and store.export("d", a.take, "mp4") is None
    assert store.exports_covering("d", 5) == [a] and store.exports_covering("d", 6) == [b]
    assert store.exports_covering("d", 1) == []
    assert [e.take for e in store.exports_before(2.5)] == [a.take, b.take]
    newer = Export("d", a.take, "mcap", 2, 5, "local", "_exports/d/a2.mcap", 11, 4.0)
    store.put_export(newer)  # made again: replaces
    assert store.export("d", a.take, "mcap") == newer
    store.delete_export("d", a.take, "mcap")
    assert store.export("d", a.take, "mcap") is None and store.exports_covering("d", 3) == []


def case_tombstones(store: Store) -> None:
    from agent.collector.store import Tombstone

    big = 2**63 - 1
    t = Tombstone("d", 4, "d-00000004", "c" * 64, 123, "wearer-discard", "req-1", 50.0)
    assert store.add_tombstone(t) == t
    # the first one stays: a resent request (or a later retention) does not rewrite it
    later = Tombstone("d", 4, "d-00000004", "", None, "retention", "", 60.0)
    assert store.add_tombstone(later) == t
    store.add_tombstone(Tombstone("d", big, f"d-{big}", "", None, "retention", "", 61.0))
    store.add_tombstone(Tombstone("e", 4, "e-00000004", "", None, "retention", "", 62.0))
    assert store.tombstone("d", 5) is None
    store.set_purged("d", 4, 70.0)
    got = store.tombstone("d", 4)
    assert got is not None and got.purged == 70.0 and got.length == 123
    assert [(x.seq, x.reason) for x in store.tombstones("d")] == [(4, "wearer-discard"),
                                                                  (big, "retention")]


def case_reader_role_and_device_uploads(store: Store) -> None:
    auth.enroll(store, "d")
    reader = auth.role_token(store, "reader")
    admin = auth.admin_token(store)
    assert auth.authenticate(store, f"Bearer {reader}").can_read_data
    assert not auth.authenticate(store, f"Bearer {auth.enroll(store, 'e')}").can_read_data
    assert store.revoke_role("reader") and not store.revoke_role("reader")
    assert store.token(auth.hash_token(reader)) is None
    assert store.token(auth.hash_token(admin)) is not None  # only the reader's went
    ups = [_upload("d", q) for q in (7, 2, 5)]
    for u in ups:
        assert store.insert_upload(u, {})
    store.set_state(ups[2].id, "expired")
    store.set_verified(ups[0].id, "local", "d/d-00000007.mcap", 10.0)
    got = store.device_uploads("d")
    assert [(u.seq, u.state) for u in got] == [(2, "open"), (7, "verified")]
    assert store.device_uploads("e") == []


def case_enrollment_codes(store: Store) -> None:
    from agent.collector import enrollment

    code, expires = enrollment.issue(store, 3600, now=1000.0)
    assert expires == 4600.0
    got = enrollment.redeem(store, code.lower().replace("-", " "), "rig-1", now=1001.0)
    assert auth.authenticate(store, f"Bearer {got.token}").device == "rig-1"
    assert got.next_seq == 0
    for why, c in (("used", code), ("unknown", "AAAA-BBBB-CCCC")):
        try:
            enrollment.redeem(store, c, "rig-2", now=1002.0)
        except enrollment.Refused as exc:
            assert exc.why == why
        else:
            raise AssertionError(f"{why} code accepted")
    old, _ = enrollment.issue(store, 10, now=1000.0)
    try:
        enrollment.redeem(store, old, "rig-3", now=1011.0)
    except enrollment.Refused as exc:
        assert exc.why == "expired" and "expired" in str(exc)
    else:
        raise AssertionError("expired code accepted")
    revoked, _ = enrollment.issue(store, 3600, now=1000.0)
    assert enrollment.revoke(store, revoked) and not enrollment.revoke(store, revoked)
    taken, _ = enrollment.issue(store, 3600, now=1000.0)
    for code_, why in ((revoked, "revoked"), (taken, "taken")):
        try:
            enrollment.redeem(store, code_, "rig-1", now=1001.0)
        except enrollment.Refused as exc:
            assert exc.why == why, exc.why
        else:
            raise AssertionError(f"{why} accepted")
    # the refused "taken" attempt did not spend the code: after a revoke it enrolls rig-1
    # again (an SD-card swap), and the sequence floor follows what the collector holds
    assert store.revoke("rig-1")
    u = _upload("rig-1", 6)
    assert store.insert_upload(u, {})
    again = enrollment.redeem(store, taken, "rig-1", now=1003.0)
    assert again.next_seq == 7
    assert store.token(auth.hash_token(got.token)) is None


def case_verified_before(store: Store) -> None:
    auth.enroll(store, "d")
    ups = [_upload("d", q) for q in range(4)]
    for i, u in enumerate(ups):
        assert store.insert_upload(u, {})
        if i < 3:
            store.set_verified(u.id, "local", f"k{i}", 100.0 * (3 - i))  # 300, 200, 100
    assert [u.seq for u in store.verified_before(250.0)] == [2, 1]  # oldest first
    assert [u.seq for u in store.verified_before(1000.0, limit=1)] == [2]
    assert store.verified_before(50.0) == []
