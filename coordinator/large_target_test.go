package coordinator_test

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/baton-go/baton/coordinator"
)

// TestLargeTargetsAreWritten: targets far larger than etcd's request limit
// (1.5 MiB) are written in parts, over several Txns, and members run them.
func TestLargeTargetsAreWritten(t *testing.T) {
	if testing.Short() {
		t.Skip("writes 14,000 syncs")
	}
	w := newWorld(t, nil)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	// 14,000 syncs with 120-byte IDs: about 1.7 MB of target in all, each
	// member's about 0.85 MB.
	pad := strings.Repeat("x", 114)
	ids := make([]string, 14000)
	prefix := coordinator.DefaultPrefix + "/" + w.group + "/"
	for i := range ids {
		ids[i] = fmt.Sprintf("%s%06d", pad, i)
	}
	for start := 0; start < len(ids); start += 128 {
		var ops []clientv3.Op
		for _, id := range ids[start:min(start+128, len(ids))] {
			ops = append(ops, clientv3.OpPut(prefix+"syncs/"+id, `{}`))
		}
		_, err := w.admin.Txn(ctx).Then(ops...).Commit()
		require.NoError(t, err)
	}
	// A TTL of 5s, not the suite's 1s: under -race on two cores the burst
	// of 14,000 claims can delay a keep-alive past a 1s lease, which then
	// (rightly) revokes everything and starts over; this test is about the
	// target's size, not that race.
	w.join("m1", nil, nil, coordinator.WithTTL(5*time.Second))
	w.join("m2", nil, nil, coordinator.WithTTL(5*time.Second))
	w.waitOwned(ids, 60*time.Second)

	for _, m := range []string{"m1", "m2"} {
		resp, err := w.admin.Get(ctx, prefix+"targets/"+m)
		require.NoError(t, err)
		require.Len(t, resp.Kvs, 1)
		var head struct {
			Parts int `json:"parts"`
		}
		require.NoError(t, json.Unmarshal(resp.Kvs[0].Value, &head))
		require.Greater(t, head.Parts, 1, "target of %s is split", m)
	}
	st := describe(t, w)
	require.Zero(t, st.Pending)
	require.Len(t, st.Syncs, len(ids))
	require.Empty(t, st.PlanError)
}
