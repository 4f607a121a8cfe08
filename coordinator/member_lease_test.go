package coordinator_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/baton-go/baton/coordinator"
)

// TestMemberKeysWithoutLeaseOrWeightAreIgnored: hand-written member keys
// (no lease; null; no weight) are not live members.
func TestMemberKeysWithoutLeaseOrWeightAreIgnored(t *testing.T) {
	w := newWorld(t, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	lease, err := w.admin.Grant(ctx, 60)
	require.NoError(t, err)
	t.Cleanup(func() { _, _ = w.admin.Revoke(context.Background(), lease.ID) })
	prefix := coordinator.DefaultPrefix + "/" + w.group + "/members/"
	_, err = w.admin.Txn(ctx).Then(
		clientv3.OpPut(prefix+"noLease", `{"weight":1}`),
		clientv3.OpPut(prefix+"null", `null`, clientv3.WithLease(lease.ID)),
		clientv3.OpPut(prefix+"empty", `{}`, clientv3.WithLease(lease.ID)),
	).Commit()
	require.NoError(t, err)
	ids := syncIDs(8)
	w.putSyncs(ids...)
	w.join("m1", nil, nil)
	w.waitOwned(ids, 10*time.Second, "m1")
	st := describe(t, w)
	require.Len(t, st.Members, 1, "members in Describe: %+v", st.Members)
	require.Zero(t, st.Pending)
}
