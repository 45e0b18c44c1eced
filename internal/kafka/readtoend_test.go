package kafka_test

import (
	"context"
	"strconv"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/usernameregistry/registry/internal/kafka"
)

// TestReadToEndWaitsForASlowPartition: partition 1's start offset is not
// listable for its first 3 s (as after a leader election on Apache Kafka,
// KIP-207), so the consumer fetches partition 0 alone first and polls
// come back empty for a while. ReadToEnd must still return every record
// of every partition; reading "until a 2 s poll is empty" returned
// partition 0's only (a rename crash test on Apache Kafka failed so).
func TestReadToEndWaitsForASlowPartition(t *testing.T) {
	t.Parallel()
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(3, "t"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	cl, err := kgo.NewClient(kgo.SeedBrokers(c.ListenAddrs()...), kgo.RecordPartitioner(kgo.ManualPartitioner()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	want := map[int32]int{0: 5, 1: 7} // partition 2 stays empty
	for p, n := range want {
		for i := range n {
			if err := cl.ProduceSync(context.Background(), &kgo.Record{Topic: "t", Partition: p, Value: []byte(strconv.Itoa(i))}).FirstErr(); err != nil {
				t.Fatal(err)
			}
		}
	}
	until := time.Now().Add(3 * time.Second)
	c.ControlKey(kmsg.ListOffsets.Int16(), func(kreq kmsg.Request) (kmsg.Response, error, bool) {
		c.KeepControl()
		req := kreq.(*kmsg.ListOffsetsRequest)
		if time.Now().After(until) {
			return nil, nil, false
		}
		resp := req.ResponseKind().(*kmsg.ListOffsetsResponse)
		resp.SetVersion(req.GetVersion())
		for _, rt := range req.Topics {
			st := kmsg.NewListOffsetsResponseTopic()
			st.Topic = rt.Topic
			for _, rp := range rt.Partitions {
				sp := kmsg.NewListOffsetsResponseTopicPartition()
				sp.Partition, sp.LeaderEpoch = rp.Partition, -1
				switch {
				case rp.Partition == 1 && rp.Timestamp == -2: // earliest: the consumer's start
					sp.ErrorCode = kerr.OffsetNotAvailable.Code
				case rp.Timestamp == -2:
					sp.Offset = 0
				default: // latest
					sp.Offset = int64(want[rp.Partition])
				}
				st.Partitions = append(st.Partitions, sp)
			}
			resp.Topics = append(resp.Topics, st)
		}
		return resp, nil, true
	})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	recs, err := kafka.ReadToEnd(ctx, "t", kgo.SeedBrokers(c.ListenAddrs()...))
	if err != nil {
		t.Fatal(err)
	}
	got := map[int32]int{}
	for _, r := range recs {
		if r.Offset != int64(got[r.Partition]) {
			t.Fatalf("partition %d: offset %d after %d records", r.Partition, r.Offset, got[r.Partition])
		}
		got[r.Partition]++
	}
	if len(got) != len(want) || got[0] != want[0] || got[1] != want[1] {
		t.Fatalf("read %v records per partition, want %v", got, want)
	}
}
