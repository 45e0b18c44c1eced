"""Checks the Python client against the shared test vectors, and, given a
running registry (REGISTRY_KAFKA_BROKERS), produces claims and reads their
decisions. Under CI=true a missing registry fails instead of skipping."""

import json
import os
import pathlib
import uuid

import pytest

import registry_client as rc

VECTORS = json.loads((pathlib.Path(__file__).parent.parent / "testvectors.json").read_text(encoding="utf-8"))


@pytest.mark.parametrize("v", VECTORS["vectors"], ids=lambda v: v["typed"])
def test_murmur2_and_partitions(v):
    key = v["key"].encode("utf-8")
    assert key.hex() == v["key_hex"]
    assert rc.murmur2(key) == v["murmur2"]
    for n, want in v["partitions"].items():
        assert rc.partition(v["key"], int(n)) == want


def test_is_decision_for_matches_all_four():
    """The decision for a claim: request_id and user_id in lowercase
    canonical form, username exact, claim_partition the acknowledged one,
    no command; everything else sharing the request_id is passed over."""
    rid, user = "0B6F2A51-8C3E-4D7A-9E21-5F4C3B2A1D01", "7D3F2B0E-5A61-4C1E-9F5B-2B8C1D4E6A01"
    mine = {"request_id": rid.lower(), "user_id": user.lower(), "username": "Alice", "outcome": "registered", "claim_partition": 9}
    assert rc.is_decision_for(mine, rid, user, "Alice", 9)
    assert not rc.is_decision_for(mine, rid, user, "Alice", 0), "decided in another partition"
    assert not rc.is_decision_for(mine, rid, user, "alice", 9), "username as typed, exact"
    assert not rc.is_decision_for({**mine, "user_id": "c4a8e913-2f7d-4b6a-8e15-93d0f2a7b502", "reason": "request_conflict"}, rid, user, "Alice", 9), "another payload's request_conflict"
    assert not rc.is_decision_for({**mine, "command": "release"}, rid, user, "Alice", 9), "another command's decision"


def brokers():
    b = os.environ.get("REGISTRY_KAFKA_BROKERS", "")
    if not b:
        if os.environ.get("CI") == "true":
            pytest.fail("CI=true and REGISTRY_KAFKA_BROKERS is not set: no registry to talk to")
        pytest.skip("REGISTRY_KAFKA_BROKERS not set (source the data directory's registry.env of a running `registry dev`)")
    return b


def test_claims_are_decided_in_their_partition():
    b = brokers()
    consumer = rc.decisions_consumer(b)
    producer = rc.producer(b)
    try:
        # Names from the vectors, claimed by a fresh user: each decision is
        # registered, or taken/confusable/reserved by an earlier holder;
        # never invalid, which is what a wrong partition would get.
        for v in VECTORS["vectors"][:8]:
            user = str(uuid.uuid4())
            rid, part = rc.produce_claim(producer, user, v["typed"], v["canonical"], v["key"], policy_version=VECTORS["policy_version"])
            d = rc.await_decision(consumer, rid, user, v["typed"], part)
            assert d["outcome"] in ("registered", "rejected"), d
            assert d.get("reason") != "invalid", d
            assert d["canonical"] == v["canonical"], d
            assert d["claim_partition"] == part == rc.partition(v["key"], partitions(producer)), d
            # A retry with the same request_id gets the same decision.
            again = rc.claim(producer, consumer, user, v["typed"], v["canonical"], v["key"], request_id=rid, policy_version=VECTORS["policy_version"])
            assert (again["outcome"], again.get("reason"), again["claim_partition"]) == (d["outcome"], d.get("reason"), part)
    finally:
        consumer.close()




def partitions(producer):
    return len(producer.list_topics(rc.CLAIMS, timeout=30).topics[rc.CLAIMS].partitions)


def registry_url():
    """The API of the registry REGISTRY_KAFKA_BROKERS belongs to, for the
    lookup; `registry dev` listens on 127.0.0.1:8080 unless told otherwise."""
    return os.environ.get("REGISTRY_URL", "http://127.0.0.1:8080")


def test_a_copy_in_a_wrong_partition_does_not_answer_the_claim():
    """The same payload written first to a wrong partition (as a producer
    with another partitioner would) is decided invalid there; the claim
    written through the client to its key's partition must get its own
    decision, registered, not that copy's (docs/events.md, "Consuming
    decisions")."""
    b = brokers()
    name = "py-" + uuid.uuid4().hex[:12]
    n = rc.lookup(registry_url(), name)
    assert n["status"] == "available", n
    producer = rc.producer(b)
    count = partitions(producer)
    if count < 2:
        pytest.fail("claims has one partition: run `registry dev --partitions 12` so that a partition can be wrong")
    assert rc.partition(n["key"], count) == n["partition"], n
    wrong = (n["partition"] + 1) % count
    # The client's reader starts first, as a service's long-lived one does,
    # so it reads the wrong copy's decision too; the test watches for that
    # decision with a reader of its own.
    reader = rc.decisions_consumer(b)
    watcher = rc.decisions_consumer(b)
    try:
        user, rid = str(uuid.uuid4()), str(uuid.uuid4())
        errors = []
        producer.produce(rc.CLAIMS, partition=wrong, key=n["key"].encode("utf-8"),
                         value=rc.claim_value(rid, user, name, n["canonical"], n["key"], n["policy_version"]),
                         headers=[("event-type", b"ClaimSubmitted"), ("schema-version", b"1")],
                         on_delivery=lambda err, msg: errors.append(err) if err else None)
        assert producer.flush(30) == 0 and not errors, errors
        copy = rc.await_decision(watcher, rid, user, name, wrong)
        assert (copy["outcome"], copy.get("reason")) == ("rejected", "invalid"), copy

        d = rc.claim(producer, reader, user, name, n["canonical"], n["key"], request_id=rid, policy_version=n["policy_version"])
        assert (d["outcome"], d.get("reason"), d["claim_partition"]) == ("registered", None, n["partition"]), d
        assert d["holder_request_id"] == rid, d
    finally:
        reader.close()
        watcher.close()
