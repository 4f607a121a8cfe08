package coordinator_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/baton-go/baton/coordinator"
)

// Admin.Drain watches the member key from the revision after the record it
// read (its ModRevision), which is as old as the member's last write of its
// record: usually its registration. On an etcd whose history has been
// compacted since (any etcd with auto-compaction, after a while), that watch
// fails at once with ErrCompacted and Drain returns an error although the
// request was written and the member acknowledges it.
func TestAdminDrainOfAMemberRegisteredBeforeACompaction(t *testing.T) {
	w := newWorld(t, nil)
	w.join("m1", nil, nil)
	w.join("m2", nil, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	// History moves on and is compacted, as etcd's auto-compaction does.
	for range 3 {
		_, err := w.admin.Put(ctx, "/unrelated", "x")
		require.NoError(t, err)
	}
	resp, err := w.admin.Get(ctx, "/unrelated")
	require.NoError(t, err)
	_, err = w.admin.Compact(ctx, resp.Header.Revision, clientv3.WithCompactPhysical())
	require.NoError(t, err)

	admin, err := coordinator.NewAdmin(w.admin, w.group)
	require.NoError(t, err)
	require.NoError(t, admin.Drain(ctx, "m1"), "draining a member registered before the last compaction")
}
