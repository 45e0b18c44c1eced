package projector_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/usernameregistry/registry/claims/username"
	"github.com/usernameregistry/registry/events"
	"github.com/usernameregistry/registry/internal/kafka"
	"github.com/usernameregistry/registry/internal/testenv"
	"github.com/usernameregistry/registry/projector"
)

// TestRecordTimestamps pins down what the registry does with record
// timestamps on each broker (docs/design.md, "Apache Kafka and kfake",
// Timestamps). Every time the decider compares is a record timestamp:
// registered_at is the winning claim's, held_until the release's plus its
// hold. A foreign producer writes straight to claims:
//
//   - a claim dated two hours ahead: Kafka 4 refuses it (INVALID_TIMESTAMP,
//     message.timestamp.after.max.ms is one hour), so it never reaches the
//     log; kfake takes it, and the name is registered at that future time;
//   - under CreateTime (the default), a claim dated 30 minutes ahead gets a
//     name inside a 10-minute hold: the producer's clock decides holds;
//   - with message.timestamp.type=LogAppendTime on claims, Kafka stamps
//     every record with its own clock, so the same forward-dated claim is
//     refused held and a claim dated two hours ahead is accepted and
//     registered now; kfake ignores the setting and keeps the producer's
//     timestamps.
func TestRecordTimestamps(t *testing.T) {
	t.Parallel()
	brokers, prod := testenv.Topics(t, 1)
	pool, _ := testenv.Database(t)
	realKafka := !testenv.EmbeddedKafka()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	u1, u2 := uuid.NewString(), uuid.NewString()
	record := func(typ, user, name string, at time.Time, hold time.Duration) (*kgo.Record, string) {
		t.Helper()
		n, err := username.Normalize(name)
		if err != nil {
			t.Fatal(err)
		}
		id := uuid.NewString()
		rec, err := events.CommandRecord(typ, &events.ClaimSubmitted{RequestID: id, UserID: user, Username: name, Canonical: n.Canonical,
			Key: n.Key, PolicyVersion: username.Latest, SubmittedAt: at, HoldSeconds: int64(hold / time.Second)})
		if err != nil {
			t.Fatal(err)
		}
		rec.Timestamp = at
		return rec, id
	}
	produce := func(recs ...*kgo.Record) {
		t.Helper()
		if err := prod.ProduceSync(ctx, recs...).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}
	now := time.Now()
	const hold = 10 * time.Minute

	// CreateTime, the default.
	far, farID := record(events.TypeClaimSubmitted, u1, "fay", now.Add(2*time.Hour), 0)
	err := prod.ProduceSync(ctx, far).FirstErr()
	switch {
	case realKafka && !errors.Is(err, kerr.InvalidTimestamp):
		t.Errorf("Kafka took a claim dated two hours ahead: %v, want INVALID_TIMESTAMP", err)
	case !realKafka && err != nil:
		t.Errorf("kfake refused a claim dated two hours ahead: %v", err)
	}
	gus, _ := record(events.TypeClaimSubmitted, u1, "gus", now, 0)
	gusRelease, _ := record(events.TypeReleaseSubmitted, u1, "gus", now, hold)
	gusAhead, gusAheadID := record(events.TypeClaimSubmitted, u2, "gus", now.Add(30*time.Minute), 0)
	produce(gus, gusRelease, gusAhead)

	// LogAppendTime on claims.
	adm := kadm.NewClient(prod)
	alter := []kadm.AlterConfig{{Op: kadm.SetConfig, Name: "message.timestamp.type", Value: kadm.StringPtr("LogAppendTime")}}
	if _, err := adm.AlterTopicConfigs(ctx, alter, events.TopicClaims); err != nil {
		t.Fatal(err)
	}
	if realKafka { // the broker applies it asynchronously; wait until it answers with it
		for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(200 * time.Millisecond) {
			if logAppendTime(ctx, adm) {
				break
			}
			if time.Now().After(deadline) {
				t.Fatal("claims never showed message.timestamp.type=LogAppendTime")
			}
		}
	}
	before := time.Now()
	hal, _ := record(events.TypeClaimSubmitted, u1, "hal", before, 0)
	halRelease, _ := record(events.TypeReleaseSubmitted, u1, "hal", before, hold)
	halAhead, halAheadID := record(events.TypeClaimSubmitted, u2, "hal", before.Add(30*time.Minute), 0)
	ivy, ivyID := record(events.TypeClaimSubmitted, u1, "ivy", before.Add(2*time.Hour), 0)
	produce(hal, halRelease, halAhead, ivy)
	after := time.Now()

	log := testenv.Logger(t)
	p, err := projector.New(projector.Config{Kafka: kafka.ClientOptions(brokers, log), Partitions: 1, SessionTimeout: 6 * time.Second, Logger: log}, pool)
	if err != nil {
		t.Fatal(err)
	}
	pctx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(pctx) }()
	t.Cleanup(func() {
		stop()
		if err := <-done; err != nil {
			t.Errorf("projector: %v", err)
		}
	})
	store := projector.NewStore(pool)
	decision := func(id string) *events.Decision {
		t.Helper()
		for deadline := time.Now().Add(60 * time.Second); ; time.Sleep(100 * time.Millisecond) {
			d, err := store.Decision(ctx, id)
			if err != nil {
				t.Fatal(err)
			}
			if d != nil {
				return d
			}
			if time.Now().After(deadline) {
				t.Fatalf("request %s undecided after 60s", id)
			}
		}
	}
	registeredAt := func(what string, d *events.Decision, from, to time.Time) {
		t.Helper()
		if d.Outcome != events.OutcomeRegistered || d.RegisteredAt == nil {
			t.Errorf("%s: %s %s, want registered", what, d.Outcome, d.Reason)
			return
		}
		if at := *d.RegisteredAt; at.Before(from.Truncate(time.Millisecond)) || at.After(to) {
			t.Errorf("%s: registered at %s, want between %s and %s", what, at, from, to)
		}
	}

	if d := decision(gusAheadID); d.Outcome != events.OutcomeRegistered {
		t.Errorf("under CreateTime, a claim dated 30 minutes ahead inside a 10-minute hold: %s %s, want registered (the producer's clock decides)", d.Outcome, d.Reason)
	}
	d := decision(halAheadID)
	switch {
	case realKafka && d.Reason != events.ReasonHeld:
		t.Errorf("under LogAppendTime on Kafka, a claim dated 30 minutes ahead inside a 10-minute hold: %s %s, want held (the broker's clock decides)", d.Outcome, d.Reason)
	case !realKafka && d.Outcome != events.OutcomeRegistered:
		t.Errorf("kfake, which ignores LogAppendTime, decided the forward-dated claim %s %s, want registered", d.Outcome, d.Reason)
	}
	if realKafka {
		registeredAt("a claim dated two hours ahead under LogAppendTime on Kafka", decision(ivyID), before, after)
	} else {
		registeredAt("a claim dated two hours ahead on kfake", decision(farID), now.Add(2*time.Hour), now.Add(2*time.Hour))
		registeredAt("a claim dated two hours ahead under LogAppendTime on kfake", decision(ivyID), before.Add(2*time.Hour), before.Add(2*time.Hour))
	}
}

// logAppendTime reports whether the broker describes claims with
// message.timestamp.type=LogAppendTime.
func logAppendTime(ctx context.Context, adm *kadm.Client) bool {
	rcs, err := adm.DescribeTopicConfigs(ctx, events.TopicClaims)
	if err != nil {
		return false
	}
	rc, err := rcs.On(events.TopicClaims, nil)
	if err != nil {
		return false
	}
	for _, c := range rc.Configs {
		if c.Key == "message.timestamp.type" {
			return c.MaybeValue() == "LogAppendTime"
		}
	}
	return false
}
