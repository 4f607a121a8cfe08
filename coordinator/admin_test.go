package coordinator_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

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
	require.ErrorContains(t, err, "[WithTTL WithWeight] have no meaning for an admin")
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
