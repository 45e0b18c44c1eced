//go:build chaosbug

package projector

import (
	"os"
	"strings"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/usernameregistry/registry/projector/internal/projection"
)

// This file exists only in the chaosbug build, a deliberately broken
// projector used to show that the chaos checker catches real bugs. Never
// ship it. REGISTRY_CHAOS_BUG picks one bug (read here rather than in cmd
// because no production code path may know about it):
//
//   - fence: the compare-and-set is gone. A batch advances its partition
//     whatever the stored epoch and offset, so a zombie's batch commits.
//   - ledger: the request ledger is neither read nor enforced. A repeated
//     request_id is decided afresh and a reused one is not refused.
//   - offset: a newly assigned partition resumes at the log end instead of
//     at the stored next offset (auto.offset.reset=latest), skipping the
//     claims written while nobody owned it.
var chaosBug = os.Getenv("REGISTRY_CHAOS_BUG")

func bugSQL(sql string) string {
	switch {
	case chaosBug == "fence" && sql == sqlAdvance:
		return strings.Replace(sql, " AND c.owner_epoch = v.epoch AND c.next_offset = v.prev", "", 1)
	case chaosBug == "ledger" && sql == sqlLoadRequests:
		return strings.Replace(sql, "WHERE", "WHERE false AND", 1)
	case chaosBug == "ledger" && sql == projection.SQLInsertRequests:
		return sql + ` ON CONFLICT DO NOTHING`
	}
	return sql
}

func resumeAt(next int64) kgo.Offset {
	if chaosBug == "offset" {
		return kgo.NewOffset().AtEnd()
	}
	return kgo.NewOffset().At(next).WithEpoch(-1)
}
