// Package kafka sets up franz-go clients for the registry and guards the
// shape of its topics. It knows the topic names from events but no domain
// rules.
package kafka

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/plugin/kprom"
	"github.com/twmb/franz-go/plugin/kslog"

	"github.com/usernameregistry/registry/events"
)

// ClientOptions are the options every registry client starts from: the seed
// brokers, logging through slog, and acks from all in-sync replicas with
// idempotent writes (franz-go's defaults, stated so nobody loosens them by
// accident).
func ClientOptions(brokers []string, log *slog.Logger) []kgo.Opt {
	return []kgo.Opt{
		kgo.SeedBrokers(brokers...),
		kgo.WithLogger(kslog.New(slog.New(quieter{log.Handler().WithAttrs([]slog.Attr{slog.String("component", "kafka")})}))),
		kgo.RequiredAcks(kgo.AllISRAcks()),
	}
}

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
// record: nothing is ever deleted or compacted away.
var requiredConfigs = map[string]string{
	"cleanup.policy":  "delete",
	"retention.ms":    "-1",
	"retention.bytes": "-1",
}

// ErrTopicLayout is wrapped when the topics exist in a shape the registry
// refuses to run on.
var ErrTopicLayout = errors.New("topics unsafe for the registry")

// EnsureTopics creates the claims and registrations topics with partitions
// partitions if they are missing, then checks both: same partition count,
// delete cleanup policy, infinite retention. It returns the partition count
// the topics actually have, which may differ from partitions when they
// already existed.
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
	return CheckTopicsNamed(ctx, adm, names)
}

// CheckTopics verifies the topics' shape without changing anything and
// returns their partition count.
func CheckTopics(ctx context.Context, adm *kadm.Client) (int32, error) {
	return CheckTopicsNamed(ctx, adm, events.Topics{})
}

// CheckTopicsNamed is CheckTopics for the topics names names.
func CheckTopicsNamed(ctx context.Context, adm *kadm.Client, names events.Topics) (int32, error) {
	names = names.WithDefaults()
	topics := []string{names.Claims, names.Registrations}
	md, err := adm.ListTopics(ctx, topics...)
	if err != nil {
		return 0, fmt.Errorf("describing topics: %w", err)
	}
	counts := map[string]int32{}
	for _, t := range topics {
		d, ok := md[t]
		if !ok || d.Err != nil {
			return 0, fmt.Errorf("%w: topic %s is missing (%v)", ErrTopicLayout, t, d.Err)
		}
		counts[t] = int32(len(d.Partitions))
	}
	if counts[names.Claims] != counts[names.Registrations] {
		return 0, fmt.Errorf("%w: %s has %d partitions but %s has %d; they must be equal",
			ErrTopicLayout, names.Claims, counts[names.Claims], names.Registrations, counts[names.Registrations])
	}
	if err := checkConfigs(ctx, adm, topics); err != nil {
		return 0, err
	}
	return counts[names.Claims], nil
}

func checkConfigs(ctx context.Context, adm *kadm.Client, topics []string) error {
	rcs, err := adm.DescribeTopicConfigs(ctx, topics...)
	if err != nil {
		return fmt.Errorf("describing topic configs: %w", err)
	}
	for _, rc := range rcs {
		if rc.Err != nil {
			return fmt.Errorf("describing configs of topic %s: %w", rc.Name, rc.Err)
		}
		for _, c := range rc.Configs {
			want, ok := requiredConfigs[c.Key]
			if ok && c.MaybeValue() != want {
				return fmt.Errorf("%w: topic %s has %s=%s; the registry needs %s=%s so the topics keep every claim and decision forever",
					ErrTopicLayout, rc.Name, c.Key, c.MaybeValue(), c.Key, want)
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
