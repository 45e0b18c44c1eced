// Package kafka sets up franz-go clients for the registry and guards the
// shape of its topics. It knows the topic names from events but no domain
// rules.
package kafka

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/plugin/kprom"
	"github.com/twmb/franz-go/plugin/kslog"

	"github.com/usernameregistry/registry/events"
)

// ClientOptions are the options every registry client starts from: the seed
// brokers, logging through slog, acks from all in-sync replicas with
// idempotent writes (franz-go's defaults, stated so nobody loosens them by
// accident), and gzip compression.
//
// The codec is part of what consumers of the topics must read
// (docs/events.md). franz-go's default is Snappy, which KafkaJS cannot
// read without an extra codec package: a plain KafkaJS consumer crashed on
// the registry's own records. Gzip is the one codec every mainstream
// client reads out of the box (the Java client, librdkafka and the
// clients built on it, KafkaJS, franz-go, kcat).
func ClientOptions(brokers []string, log *slog.Logger) []kgo.Opt {
	return []kgo.Opt{
		kgo.SeedBrokers(brokers...),
		kgo.WithLogger(kslog.New(slog.New(quieter{log.Handler().WithAttrs([]slog.Attr{slog.String("component", "kafka")})}))),
		kgo.RequiredAcks(kgo.AllISRAcks()),
		kgo.WithCompressor(compressor),
	}
}

// compressor writes gzip, readable by every mainstream client without
// extra packages. It is built once and shared, as franz-go shares one
// compressor between a client's batches: kgo.ProducerBatchCompression
// would not do, because franz-go rewrites the option's codec slice in
// place in every NewClient, a data race when one option list builds
// clients concurrently (the API's producer and reader do).
var compressor = func() kgo.Compressor {
	c, err := kgo.DefaultCompressor(kgo.GzipCompression())
	if err != nil {
		panic(fmt.Sprintf("kafka: gzip compressor: %v", err))
	}
	return c
}()

// quieter passes on franz-go's warnings and errors only: its info lines
// (every rebalance step, every metadata refresh) drown the registry's own.
type quieter struct{ slog.Handler }

func (q quieter) Enabled(ctx context.Context, l slog.Level) bool {
	return l >= slog.LevelWarn && q.Handler.Enabled(ctx, l)
}

func (q quieter) WithAttrs(as []slog.Attr) slog.Handler { return quieter{q.Handler.WithAttrs(as)} }
func (q quieter) WithGroup(name string) slog.Handler    { return quieter{q.Handler.WithGroup(name)} }

// ParseBrokers splits a comma-separated broker list.
func ParseBrokers(s string) []string {
	var out []string
	for _, b := range strings.Split(s, ",") {
		if b = strings.TrimSpace(b); b != "" {
			out = append(out, b)
		}
	}
	return out
}

// requiredConfigs are the topic settings that keep the topics a complete
// record: nothing is ever deleted or compacted away, and no replica that
// missed acknowledged records is ever made leader (an unclean election
// truncates the log to what that replica had: decided claims vanish and
// their offsets are reused).
var requiredConfigs = map[string]string{
	"cleanup.policy":                 "delete",
	"retention.ms":                   "-1",
	"retention.bytes":                "-1",
	"unclean.leader.election.enable": "false",
}

// ErrTopicLayout is wrapped when the topics exist in a shape the registry
// refuses to run on.
var ErrTopicLayout = errors.New("topics unsafe for the registry")

// errNotSettled marks what a just-created topic may still show on Apache
// Kafka in KRaft mode: CreateTopics answers once the controller committed
// the topic, before every broker's metadata has it, so Metadata and
// DescribeConfigs can say UNKNOWN_TOPIC_OR_PARTITION for a moment.
var errNotSettled = errors.New("topic not yet known to every broker")

// settleTimeout bounds how long EnsureTopics waits for topics it created
// (or found being created) to appear; franz-go caches an unknown topic
// for its metadata minimum age (5 s), so a few refreshes fit.
const settleTimeout = 30 * time.Second

// EnsureTopics creates the claims and registrations topics with partitions
// partitions and replication replicas (-1: the broker's
// default.replication.factor) if they are missing, waits until the broker
// lists them, then checks both as CheckTopics does and, when replication
// is positive, that every partition has at least that many replicas. It
// returns the partition count the topics actually have, which may differ
// from partitions when they already existed.
func EnsureTopics(ctx context.Context, adm *kadm.Client, partitions int32, replication int16) (int32, error) {
	return EnsureTopicsNamed(ctx, adm, events.Topics{}, partitions, replication)
}

// EnsureTopicsNamed is EnsureTopics for the topics names names (empty
// names are the defaults).
func EnsureTopicsNamed(ctx context.Context, adm *kadm.Client, names events.Topics, partitions int32, replication int16) (int32, error) {
	names = names.WithDefaults()
	topics := []string{names.Claims, names.Registrations}
	configs := map[string]*string{}
	for k, v := range requiredConfigs {
		configs[k] = &v
	}
	resp, err := adm.CreateTopics(ctx, partitions, replication, configs, topics...)
	if err != nil {
		return 0, fmt.Errorf("creating topics: %w", err)
	}
	for _, r := range resp.Sorted() {
		if r.Err != nil && !errors.Is(r.Err, kerr.TopicAlreadyExists) {
			return 0, fmt.Errorf("creating topic %s: %w", r.Topic, r.Err)
		}
	}
	deadline := time.Now().Add(settleTimeout)
	for {
		n, err := checkTopics(ctx, adm, names, replication)
		if !errors.Is(err, errNotSettled) || time.Now().After(deadline) {
			return n, err
		}
		select {
		case <-ctx.Done():
			return 0, fmt.Errorf("%w (%w)", err, ctx.Err())
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// CheckTopics verifies the topics' shape without changing anything and
// returns their partition count: both exist with the same partition count,
// the settings of requiredConfigs, and a min.insync.replicas that their
// replicas can meet (otherwise every write with acks=all fails with
// NOT_ENOUGH_REPLICAS). Errors wrap ErrTopicLayout.
func CheckTopics(ctx context.Context, adm *kadm.Client) (int32, error) {
	return CheckTopicsNamed(ctx, adm, events.Topics{})
}

// CheckTopicsNamed is CheckTopics for the topics names names.
func CheckTopicsNamed(ctx context.Context, adm *kadm.Client, names events.Topics) (int32, error) {
	return checkTopics(ctx, adm, names, -1)
}

func checkTopics(ctx context.Context, adm *kadm.Client, names events.Topics, replication int16) (int32, error) {
	names = names.WithDefaults()
	topics := []string{names.Claims, names.Registrations}
	md, err := adm.ListTopics(ctx, topics...)
	if err != nil {
		return 0, fmt.Errorf("describing topics: %w", err)
	}
	counts := map[string]int32{}
	replicas := map[string]int{} // the fewest replicas of any partition
	for _, t := range topics {
		d, ok := md[t]
		if !ok || d.Err != nil {
			return 0, fmt.Errorf("%w: topic %s is missing (%v)%w", ErrTopicLayout, t, d.Err, notSettled(d.Err))
		}
		counts[t] = int32(len(d.Partitions))
		replicas[t] = fewestReplicas(d)
		if replication > 0 && replicas[t] < int(replication) {
			return 0, fmt.Errorf("%w: topic %s has a partition with %d replicas; the registry was asked for %d (--replication, REGISTRY_REPLICATION_FACTOR)",
				ErrTopicLayout, t, replicas[t], replication)
		}
	}
	if counts[names.Claims] != counts[names.Registrations] {
		return 0, fmt.Errorf("%w: %s has %d partitions but %s has %d; they must be equal",
			ErrTopicLayout, names.Claims, counts[names.Claims], names.Registrations, counts[names.Registrations])
	}
	if err := checkConfigs(ctx, adm, topics, replicas); err != nil {
		return 0, err
	}
	return counts[names.Claims], nil
}

// notSettled returns errNotSettled for the errors a topic shows while
// KRaft propagates its creation, so that %w wraps it; nil otherwise.
func notSettled(err error) error {
	if errors.Is(err, kerr.UnknownTopicOrPartition) || errors.Is(err, kerr.LeaderNotAvailable) {
		return errNotSettled
	}
	return nil
}

func fewestReplicas(d kadm.TopicDetail) int {
	fewest := -1
	for _, p := range d.Partitions {
		if fewest < 0 || len(p.Replicas) < fewest {
			fewest = len(p.Replicas)
		}
	}
	return fewest
}

func checkConfigs(ctx context.Context, adm *kadm.Client, topics []string, replicas map[string]int) error {
	rcs, err := adm.DescribeTopicConfigs(ctx, topics...)
	if err != nil {
		return fmt.Errorf("describing topic configs: %w", err)
	}
	for _, rc := range rcs {
		if rc.Err != nil {
			return fmt.Errorf("describing configs of topic %s: %w%w", rc.Name, rc.Err, notSettled(rc.Err))
		}
		for _, c := range rc.Configs {
			want, ok := requiredConfigs[c.Key]
			if ok && c.MaybeValue() != want {
				return fmt.Errorf("%w: topic %s has %s=%s; the registry needs %s=%s so the topics keep every claim and decision forever",
					ErrTopicLayout, rc.Name, c.Key, c.MaybeValue(), c.Key, want)
			}
			if c.Key == "min.insync.replicas" {
				if isr, err := strconv.Atoi(c.MaybeValue()); err == nil && isr > replicas[rc.Name] {
					return fmt.Errorf("%w: topic %s has min.insync.replicas=%d but only %d replicas, so no write can be acknowledged; create it with at least %d replicas (--replication, REGISTRY_REPLICATION_FACTOR)",
						ErrTopicLayout, rc.Name, isr, replicas[rc.Name], isr)
				}
			}
		}
	}
	return nil
}

// Instrument exports a client's franz-go metrics (connections, bytes,
// buffered records) to reg as registry_kafka_*, labelled with the client's
// role. Each long-lived client gets its own role; short-lived admin clients
// are not instrumented.
func Instrument(reg prometheus.Registerer, role string) kgo.Opt {
	return kgo.WithHooks(kprom.NewMetrics("registry_kafka",
		kprom.Registerer(reg),
		kprom.WithStaticLabel(prometheus.Labels{"client": role}),
	))
}

// ListEndOffsets lists topic's end offsets, asking again while a partition
// answers a retriable error, until ctx ends: after a leader election
// Apache Kafka answers OFFSET_NOT_AVAILABLE until the new leader's high
// watermark has caught up (KIP-207), and LEADER_NOT_AVAILABLE or
// NOT_LEADER_FOR_PARTITION while the election runs; kfake never does. The
// wait between attempts doubles from 100 ms up to 2 s. A non-retriable
// error is returned at once; the end of ctx wraps ctx.Err() and the last
// answer.
func ListEndOffsets(ctx context.Context, adm *kadm.Client, topic string) (kadm.ListedOffsets, error) {
	backoff := 100 * time.Millisecond
	for {
		ends, err := adm.ListEndOffsets(ctx, topic)
		if err == nil {
			err = ends.Error()
		}
		if err == nil || !kerr.IsRetriable(err) {
			return ends, err
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("%w (last answer: %w)", ctx.Err(), err)
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 2*time.Second)
	}
}

// ReadToEnd reads every record of topic from each partition's start to
// its end offset as listed when it is called (ListEndOffsets, so a
// partition whose leader is moving is asked again), with a client made
// from opts (which must name the seed brokers). It returns the records in
// fetch order: each partition's in offset order. It stops when every
// partition has been read up to its end, not when a poll comes back empty:
// a poll can be empty while a partition's start offset is still being
// listed, and Apache Kafka then holds the next fetch for up to its wait
// time, so "read until quiet" missed records there (a rename crash test
// on Kafka saw 0 of the step-3 records that were in the topic). Errors:
// a failed client or listing, or ctx ending first (wrapped, with how far
// it got).
func ReadToEnd(ctx context.Context, topic string, opts ...kgo.Opt) ([]*kgo.Record, error) {
	cl, err := kgo.NewClient(append(append([]kgo.Opt{}, opts...), kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))...)
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", topic, err)
	}
	defer cl.Close()
	listed, err := ListEndOffsets(ctx, kadm.NewClient(cl), topic)
	if err != nil {
		return nil, fmt.Errorf("listing %s end offsets: %w", topic, err)
	}
	left := map[int32]int64{} // partitions not read to their end yet
	listed.Each(func(o kadm.ListedOffset) {
		if o.Offset > 0 {
			left[o.Partition] = o.Offset
		}
	})
	var recs []*kgo.Record
	for len(left) > 0 {
		fs := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			return nil, fmt.Errorf("reading %s: %d records read, %d partitions short of their end: %w", topic, len(recs), len(left), ctx.Err())
		}
		fs.EachRecord(func(rec *kgo.Record) {
			end, ok := left[rec.Partition]
			if !ok || rec.Offset >= end {
				return
			}
			recs = append(recs, rec)
			if rec.Offset+1 >= end {
				delete(left, rec.Partition)
			}
		})
	}
	return recs, nil
}
