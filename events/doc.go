// Package events is the registry's wire contract: the topic names, the
// record key rule, the headers, and the JSON bodies of every event that
// crosses Kafka. It imports nothing of the registry's own, so that any
// producer or consumer (the API, the projector, a replay tool, a non-Go
// client reading docs/events.md) agrees on the same bytes.
//
// Two topics carry the record of the registry:
//
//   - [TopicClaims] holds the commands ([CommandTypes]: claims, releases,
//     the three steps of a rename, runtime reservations and transfers, the
//     policy upgrade's records and the shadow follow-ups), all
//     with a [ClaimSubmitted] body, keyed by the partition key (confusable
//     skeleton) of the name they act on, so every command that could
//     conflict lands in one partition.
//   - [TopicRegistrations] holds the decisions ([DecisionTypes]), one per
//     command record, keyed the same way and published to the same
//     partition number as the command they decide.
//
// Both topics must use Kafka's default partitioner (murmur2 over the key,
// as the Java client does); see [Partition].
package events
