"""A claims producer and decisions reader for the username registry, in
Python with confluent-kafka (librdkafka), written from docs/events.md and
docs/usernames.md only.

The canonical form and key of a username come from the registry's policy
(docs/usernames.md): `lookup` asks the registry's HTTP lookup for them.
The partitioning the client must get right itself: murmur2, as Kafka's
Java client. The decision for a claim is the first one on registrations
with its request_id, user_id and username, in the partition the
produce acknowledgement named (docs/events.md, "Consuming decisions").
"""

import json
import time
import urllib.error
import urllib.parse
import urllib.request
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


def claim_value(request_id: str, user_id: str, username: str, canonical: str, key: str, policy_version: int) -> bytes:
    return json.dumps({
        "request_id": request_id,
        "user_id": user_id,
        "username": username,
        "canonical": canonical,
        "key": key,
        "policy_version": policy_version,
        "submitted_at": datetime.now(timezone.utc).isoformat().replace("+00:00", "Z"),
    }, ensure_ascii=False).encode("utf-8")


def produce_claim(p: Producer, user_id: str, username: str, canonical: str, key: str, request_id: str = "", *, policy_version: int) -> tuple[str, int]:
    """Produces a ClaimSubmitted keyed by `key`, letting the murmur2
    partitioner choose the partition, and waits for its acknowledgement.
    Returns the request_id and the partition the record was written to, as
    the delivery report gives it: the decision to wait for is that
    partition's (docs/events.md, "Consuming decisions")."""
    request_id = request_id or str(uuid.uuid4())
    acks = []
    p.produce(CLAIMS, key=key.encode("utf-8"), value=claim_value(request_id, user_id, username, canonical, key, policy_version),
              headers=[("event-type", b"ClaimSubmitted"), ("schema-version", b"1")],
              on_delivery=lambda err, msg: acks.append((err, msg)))
    if p.flush(30) != 0 or len(acks) != 1 or acks[0][0] is not None:
        raise RuntimeError(f"claim not acknowledged: {[err for err, _ in acks]}")
    return request_id, acks[0][1].partition()


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


def is_decision_for(d: dict, request_id: str, user_id: str, username: str, partition: int) -> bool:
    """Whether decision `d` answers the claim with this payload written to
    `partition` (docs/events.md, "Consuming decisions"): the same
    request_id and user_id (in lowercase canonical form), the same username
    as typed (exact), decided in that partition, and a claim's decision
    (no `command`). A request_conflict for another payload, or the decision
    for a copy written to another partition (invalid there), is not."""
    return (d.get("request_id") == _canonical_id(request_id) and d.get("user_id") == _canonical_id(user_id)
            and d.get("username") == username and d.get("claim_partition") == partition and "command" not in d)


def _canonical_id(s: str) -> str:
    """A UUID in its lowercase hyphenated form, as decisions carry it;
    anything else as written."""
    try:
        return str(uuid.UUID(s))
    except ValueError:
        return s


def await_decision(c: Consumer, request_id: str, user_id: str, username: str, partition: int, timeout: float = 30.0) -> dict:
    """Reads registrations until the decision for the claim written to
    `partition` arrives; the first that matches is the answer, later ones
    are copies. Raises TimeoutError after `timeout` seconds, and ValueError
    on a schema-version this client does not understand."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        msg = c.poll(1.0)
        if msg is None or msg.error():
            continue
        headers = dict(msg.headers() or [])
        if headers.get("event-type") not in (b"UsernameRegistered", b"ClaimRejected"):
            continue
        if headers.get("schema-version", b"1") != b"1":
            raise ValueError(f"decision with schema-version {headers['schema-version']!r}; this client reads 1")
        d = json.loads(msg.value())
        if is_decision_for(d, request_id, user_id, username, partition):
            return d
    raise TimeoutError(f"no decision for {request_id} in partition {partition} within {timeout}s")


def claim(p: Producer, c: Consumer, user_id: str, username: str, canonical: str, key: str, request_id: str = "", *, policy_version: int, timeout: float = 30.0) -> dict:
    """Claims a name: produces the claim and returns its decision. `c` must
    have been started (decisions_consumer) before this call."""
    request_id, partition = produce_claim(p, user_id, username, canonical, key, request_id, policy_version=policy_version)
    return await_decision(c, request_id, user_id, username, partition, timeout)


def lookup(url: str, username: str) -> dict:
    """The registry's answer about a name (GET /v1/usernames/{username} at
    `url`, the API's base URL): its `canonical`, `key`, `partition`,
    `policy_version` and `status`, the values to write into a claim. Every
    status (404 `available` among them) has a JSON body."""
    try:
        with urllib.request.urlopen(url.rstrip("/") + "/v1/usernames/" + urllib.parse.quote(username, safe=""), timeout=30) as r:
            return json.loads(r.read())
    except urllib.error.HTTPError as e:
        if e.code >= 500:
            raise
        return json.loads(e.read())
