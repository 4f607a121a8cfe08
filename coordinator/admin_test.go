package coordinator_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/baton-go/baton/assignment"
	"github.com/baton-go/baton/coordinator"
)

func TestAdmin(t *testing.T) {
	w := newWorld(t, nil)
	_, err := coordinator.NewAdmin(nil, w.group)
	require.Error(t, err)
	_, err = coordinator.NewAdmin(w.admin, "a/b")
	require.ErrorIs(t, err, assignment.ErrInvalidID)
	_, err = coordinator.NewAdmin(w.admin, w.group, coordinator.WithTTL(5*time.Second), coordinator.WithWeight(2))
	require.ErrorContains(t, err, "NewAdmin: options [WithTTL WithWeight] have no meaning there")
	// Describe and a SyncStore reject the options they would ignore too,
	// and a SyncStore so built writes nothing.
	octx, ocancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer ocancel()
	_, err = coordinator.Describe(octx, w.admin, w.group, coordinator.WithSettle(time.Second))
	require.ErrorContains(t, err, "Describe: options [WithSettle] have no meaning there")
	bad := coordinator.NewSyncStore(w.admin, w.group, coordinator.WithMemberID("m1"))
	require.ErrorContains(t, bad.Put(octx, assignment.Sync{ID: "never-written"}), "NewSyncStore: options [WithMemberID] have no meaning there")
	resp, err := w.admin.Get(octx, "/baton/"+w.group+"/syncs/never-written")
	require.NoError(t, err)
	require.Empty(t, resp.Kvs)
	admin, err := coordinator.NewAdmin(w.admin, w.group, coordinator.WithPrefix("/baton"))
	require.NoError(t, err)

	ids := syncIDs(4)
	w.putSyncs(ids...)
	w.join("m1", nil, nil)
	w.join("m2", nil, nil)
	base := w.settle(ids, "m1", "m2")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	require.ErrorIs(t, admin.Drain(ctx, "nobody"), coordinator.ErrNoSuchMember)
	require.ErrorIs(t, admin.Drain(ctx, "../x"), assignment.ErrInvalidID)
	// Drain returns once m1 has acknowledged (written the flag itself);
	// the leader then moves everything to m2.
	require.NoError(t, admin.Drain(ctx, "m1"))
	st, err := admin.Describe(ctx)
	require.NoError(t, err)
	require.True(t, st.Members[0].Draining)
	w.waitOwned(ids, 5*time.Second, "m2")
	require.NoError(t, admin.Drain(ctx, "m1"), "draining a draining member")
	for _, e := range w.eventsOf("revoke")[base:] {
		require.Equal(t, assignment.Draining, e.why)
	}
}

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
