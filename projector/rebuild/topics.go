package rebuild

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/usernameregistry/registry/events"
	"github.com/usernameregistry/registry/internal/kafka"
)

// ErrIncompleteLog is wrapped when the topics may no longer hold every
// claim and decision: a partition that does not start at offset 0, a
// compacted topic, or a finite retention. Nothing can be rebuilt or
// audited from such a log.
var ErrIncompleteLog = errors.New("the topics may not hold the whole log")

// Offsets are per-partition offsets of one topic.
type Offsets map[int32]int64

// Total is the sum of the offsets.
func (o Offsets) Total() int64 {
	var n int64
	for _, v := range o {
		n += v
	}
	return n
}

// CheckLog checks that both topics still hold everything ever written to
// them: the same partition count, cleanup.policy=delete (no compaction),
// retention.ms=-1 and retention.bytes=-1, and every partition starting at
// offset 0. It returns the partition count.
func CheckLog(ctx context.Context, adm *kadm.Client, topics events.Topics) (int32, error) {
	topics = topics.WithDefaults()
	n, err := kafka.CheckTopicsNamed(ctx, adm, topics)
	if err != nil {
		if errors.Is(err, kafka.ErrTopicLayout) {
			return 0, fmt.Errorf("%w: %w", ErrIncompleteLog, err)
		}
		return 0, err
	}
	starts, err := adm.ListStartOffsets(ctx, topics.Claims, topics.Registrations)
	if err != nil {
		return 0, fmt.Errorf("listing the topics' earliest offsets: %w", err)
	}
	if err := starts.Error(); err != nil {
		return 0, fmt.Errorf("listing the topics' earliest offsets: %w", err)
	}
	var gap error
	starts.Each(func(o kadm.ListedOffset) {
		if o.Offset != 0 && gap == nil {
			gap = fmt.Errorf("%w: %s partition %d starts at offset %d, not 0: records before it were deleted, so its claims or decisions are gone",
				ErrIncompleteLog, o.Topic, o.Partition, o.Offset)
		}
	})
	return n, gap
}

// Ends lists topic's end offsets for a read_committed reader (the last
// stable offsets).
func Ends(ctx context.Context, adm *kadm.Client, topic string) (Offsets, error) {
	listed, err := adm.ListCommittedOffsets(ctx, topic)
	if err != nil {
		return nil, fmt.Errorf("listing %s end offsets: %w", topic, err)
	}
	if err := listed.Error(); err != nil {
		return nil, fmt.Errorf("listing %s end offsets: %w", topic, err)
	}
	out := Offsets{}
	listed.Each(func(o kadm.ListedOffset) { out[o.Partition] = o.Offset })
	return out, nil
}

// readOptions are the fetch settings for reading a topic from start to
// end: big fetches, read_committed, and an error instead of a silent
// reset if an offset is gone.
func readOptions(base []kgo.Opt) []kgo.Opt {
	return append(slices.Clone(base),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.FetchMaxBytes(4<<20), // compressed: JSON decompresses to about 5 times this
		kgo.FetchMaxPartitionBytes(1<<20),
		kgo.FetchMaxWait(50e6), // 50ms: the reads are bounded, so waiting for more data never pays
		kgo.ConsumeResetOffset(kgo.NoResetOffset()),
	)
}

// read calls fn with the records of topic in [from, to) per partition, in
// offset order within a partition, until every partition reached to. fn
// runs on the caller's goroutine.
func read(ctx context.Context, base []kgo.Opt, topic string, from, to Offsets, fn func(p int32, recs []*kgo.Record) error) error {
	want := map[int32]kgo.Offset{}
	for p, end := range to {
		if from[p] < end {
			want[p] = kgo.NewOffset().At(from[p])
		}
	}
	if len(want) == 0 {
		return nil
	}
	cl, err := kgo.NewClient(append(readOptions(base), kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{topic: want}))...)
	if err != nil {
		return fmt.Errorf("creating a %s reader: %w", topic, err)
	}
	defer cl.Close()
	for len(want) > 0 {
		fetches := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if err := fetchError(fetches); err != nil {
			return fmt.Errorf("reading %s: %w", topic, err)
		}
		var ferr error
		fetches.EachPartition(func(fp kgo.FetchTopicPartition) {
			if ferr != nil || len(fp.Records) == 0 {
				return
			}
			end := to[fp.Partition]
			recs := fp.Records
			if i := slices.IndexFunc(recs, func(r *kgo.Record) bool { return r.Offset >= end }); i >= 0 {
				recs = recs[:i]
			}
			if len(recs) > 0 {
				ferr = fn(fp.Partition, recs)
			}
			// The registry writes no transactions, so the record at end-1
			// is a data record and every partition reaches it.
			if fp.Records[len(fp.Records)-1].Offset >= end-1 {
				delete(want, fp.Partition)
				cl.PauseFetchPartitions(map[string][]int32{topic: {fp.Partition}})
			}
		})
		if ferr != nil {
			return ferr
		}
	}
	return nil
}

func fetchError(fetches kgo.Fetches) error {
	for _, fe := range fetches.Errors() {
		switch {
		case errors.Is(fe.Err, context.Canceled), errors.Is(fe.Err, kgo.ErrClientClosed):
		case errors.Is(fe.Err, kerr.OffsetOutOfRange):
			return fmt.Errorf("%w: partition %d: %v", ErrIncompleteLog, fe.Partition, fe.Err)
		default:
			return fmt.Errorf("partition %d: %w", fe.Partition, fe.Err)
		}
	}
	return nil
}

// stream reads one partition of a topic from offset 0 up to end, one
// record at a time, fetching as it goes: at most one fetch is held.
type stream struct {
	cl    *kgo.Client
	topic string
	end   int64
	buf   []*kgo.Record
	i     int
	done  bool
}

func openStream(base []kgo.Opt, topic string, p int32, end int64) (*stream, error) {
	s := &stream{topic: topic, end: end, done: end <= 0}
	if s.done {
		return s, nil
	}
	cl, err := kgo.NewClient(append(readOptions(base),
		kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{topic: {p: kgo.NewOffset().At(0)}}))...)
	if err != nil {
		return nil, fmt.Errorf("creating a %s reader: %w", topic, err)
	}
	s.cl = cl
	return s, nil
}

// peek returns the next record without consuming it, or nil at the end.
func (s *stream) peek(ctx context.Context) (*kgo.Record, error) {
	for s.i >= len(s.buf) {
		if s.done {
			return nil, nil
		}
		fetches := s.cl.PollFetches(ctx)
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		if err := fetchError(fetches); err != nil {
			return nil, fmt.Errorf("reading %s: %w", s.topic, err)
		}
		s.buf, s.i = s.buf[:0], 0
		fetches.EachRecord(func(r *kgo.Record) {
			if r.Offset < s.end {
				s.buf = append(s.buf, r)
			}
			if r.Offset >= s.end-1 {
				s.done = true
			}
		})
	}
	return s.buf[s.i], nil
}

func (s *stream) pop() { s.i++ }

// next returns the next record and consumes it, or nil at the end.
func (s *stream) next(ctx context.Context) (*kgo.Record, error) {
	r, err := s.peek(ctx)
	if r != nil {
		s.pop()
	}
	return r, err
}

func (s *stream) close() {
	if s.cl != nil {
		s.cl.Close()
	}
}
