"""A claims producer and decisions reader for the username registry, in
Python with confluent-kafka (librdkafka), written from docs/events.md and
docs/usernames.md only.

The canonical form and key of a username come from the registry's policy
(docs/usernames.md); this client takes them as given (from the test
vectors, or from the registry's own code) and checks nothing but the
partitioning, which it must get right: murmur2, as Kafka's Java client.
"""

import json
import uuid
from datetime import datetime, timezone

from confluent_kafka import Consumer, Producer, TopicPartition

CLAIMS = "claims"
REGISTRATIONS = "registrations"


def murmur2(data: bytes) -> int:
    """Kafka's murmur2 (org.apache.kafka.common.utils.Utils.murmur2);
    returns an unsigned 32-bit value."""
    length = len(data)
    seed, m, r, mask = 0x9747B28C, 0x5BD1E995, 24, 0xFFFFFFFF
    h = (seed ^ length) & mask
    n4 = length // 4
    for i in range(n4):
        k = int.from_bytes(data[4 * i:4 * i + 4], "little")
        k = (k * m) & mask
        k ^= k >> r
        k = (k * m) & mask
        h = (h * m) & mask
        h ^= k
    tail = data[4 * n4:]
    if len(tail) == 3:
        h ^= tail[2] << 16
    if len(tail) >= 2:
        h ^= tail[1] << 8
    if len(tail) >= 1:
        h ^= tail[0]
        h = (h * m) & mask
    h ^= h >> 13
    h = (h * m) & mask
    h ^= h >> 15
    return h


def partition(key: str, partitions: int) -> int:
    """The partition of a claim with this key among `partitions`."""
    return (murmur2(key.encode("utf-8")) & 0x7FFFFFFF) % partitions


def producer(brokers: str) -> Producer:
    """A producer with the settings docs/events.md asks for: murmur2 (not
    librdkafka's CRC32 default), acks from all in-sync replicas and
    idempotence (off by default in librdkafka)."""
    return Producer({
        "bootstrap.servers": brokers,
        "partitioner": "murmur2_random",
        "enable.idempotence": True,
        "acks": "all",
        "compression.type": "gzip",
    })


def claim_value(request_id: str, user_id: str, username: str, canonical: str, key: str, policy_version: int = 1) -> bytes:
    return json.dumps({
        "request_id": request_id,
        "user_id": user_id,
        "username": username,
        "canonical": canonical,
        "key": key,
        "policy_version": policy_version,
        "submitted_at": datetime.now(timezone.utc).isoformat().replace("+00:00", "Z"),
    }, ensure_ascii=False).encode("utf-8")


def produce_claim(p: Producer, user_id: str, username: str, canonical: str, key: str, request_id: str = "", policy_version: int = 1) -> str:
    """Produces a ClaimSubmitted keyed by `key`, letting the murmur2
    partitioner choose the partition; returns the request_id."""
    request_id = request_id or str(uuid.uuid4())
    errors = []
    p.produce(CLAIMS, key=key.encode("utf-8"), value=claim_value(request_id, user_id, username, canonical, key, policy_version),
              headers=[("event-type", b"ClaimSubmitted"), ("schema-version", b"1")],
              on_delivery=lambda err, msg: errors.append(err) if err else None)
    if p.flush(30) != 0 or errors:
        raise RuntimeError(f"claim not acknowledged: {errors}")
    return request_id


def decisions_consumer(brokers: str) -> Consumer:
    """A consumer positioned at the current end of every registrations
    partition: start it before producing, so no decision is missed."""
    c = Consumer({"bootstrap.servers": brokers, "group.id": "py-" + str(uuid.uuid4()), "enable.auto.commit": False})
    md = c.list_topics(REGISTRATIONS, timeout=30)
    parts = []
    for p in md.topics[REGISTRATIONS].partitions:
        _, high = c.get_watermark_offsets(TopicPartition(REGISTRATIONS, p), timeout=30)
        parts.append(TopicPartition(REGISTRATIONS, p, high))
    c.assign(parts)
    return c


def await_decision(c: Consumer, request_id: str, user_id: str, username: str, timeout: float = 30.0) -> dict:
    """Reads registrations until the decision for this claim arrives: the
    same request_id, user_id and username (docs/events.md)."""
    import time
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        msg = c.poll(1.0)
        if msg is None or msg.error():
            continue
        headers = dict(msg.headers() or [])
        if headers.get("event-type") not in (b"UsernameRegistered", b"ClaimRejected"):
            continue
        d = json.loads(msg.value())
        if d.get("request_id") == request_id.lower() and d.get("user_id") == user_id.lower() and d.get("username") == username:
            d["_partition"] = msg.partition()
            return d
    raise TimeoutError(f"no decision for {request_id} within {timeout}s")
