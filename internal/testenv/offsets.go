package testenv

import (
	"sync/atomic"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// OffsetNotAvailable makes the in-process broker c answer its next
// answers ListOffsets requests with OFFSET_NOT_AVAILABLE for every
// partition asked about, as Apache Kafka does after a leader election
// until the new leader's high watermark has caught up (KIP-207; kfake
// never does by itself). It returns the count of those answers still to
// give: a test checks it reached 0 or below, so it knows the broker did
// answer them.
func OffsetNotAvailable(c *kfake.Cluster, answers int32) *atomic.Int32 {
	var left atomic.Int32
	left.Store(answers)
	c.ControlKey(kmsg.ListOffsets.Int16(), func(kreq kmsg.Request) (kmsg.Response, error, bool) {
		c.KeepControl()
		if left.Add(-1) < 0 {
			return nil, nil, false
		}
		req := kreq.(*kmsg.ListOffsetsRequest)
		resp := req.ResponseKind().(*kmsg.ListOffsetsResponse)
		resp.SetVersion(req.GetVersion())
		for _, rt := range req.Topics {
			st := kmsg.NewListOffsetsResponseTopic()
			st.Topic = rt.Topic
			for _, rp := range rt.Partitions {
				sp := kmsg.NewListOffsetsResponseTopicPartition()
				sp.Partition = rp.Partition
				sp.ErrorCode = kerr.OffsetNotAvailable.Code
				st.Partitions = append(st.Partitions, sp)
			}
			resp.Topics = append(resp.Topics, st)
		}
		return resp, nil, true
	})
	return &left
}
