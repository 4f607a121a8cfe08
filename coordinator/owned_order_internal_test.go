package coordinator

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/baton-go/baton/assignment"
)

// Owned lists a claim only while its owner key is this member's: a caller
// who sees the owner key gone from etcd (batonctl describe, a test, an
// operator) must not still find the claim in Owned. The release used to
// delete the key first and forget the claim after, so Owned lagged etcd
// (TestBatonctl failed on it in CI, 1 run in about 20).
func TestOwnedForgetsAClaimBeforeItsKeyIsDeleted(t *testing.T) {
	runDone := make(chan struct{})
	t.Cleanup(func() { <-runDone })
	b := newBareWorker(t)
	ctx := context.Background()
	require.NoError(t, b.store.Put(ctx, assignment.Sync{ID: "s"}))
	ownerKey, targetKey := b.w.c.keys.Owner("s"), b.w.c.keys.Target("m1")
	ctl := &ctlKV{KV: b.cli.KV}
	var mu sync.Mutex
	var releases, listedAfterDelete int
	ctl.setIntercept(func(tx *ctlTxn) (*clientv3.TxnResponse, error, bool) {
		if !deletesNested(tx.then, ownerKey) {
			return nil, nil, false
		}
		resp, err := tx.commit(tx.ctx)
		// The worker waits for this answer: what Owned says now is what
		// anyone who saw the deletion in etcd could see.
		mu.Lock()
		releases++
		if b.owned("s") != nil {
			listedAfterDelete++
		}
		mu.Unlock()
		return resp, err, true
	})
	b.cli.KV = ctl // before the worker runs
	go func() { defer close(runDone); b.w.run() }()
	_, err := b.cli.Put(ctx, targetKey, string(encodeTarget(1, []string{"s"})))
	require.NoError(t, err)
	require.True(t, waitUntilInternal(10*time.Second, func() bool { return b.owned("s") != nil }), "s runs")

	_, err = b.cli.Put(ctx, targetKey, string(encodeTarget(2, nil)))
	require.NoError(t, err)
	require.True(t, waitUntilInternal(10*time.Second, func() bool { return b.ownerKey("s") == nil }), "s released")
	mu.Lock()
	defer mu.Unlock()
	require.Equal(t, 1, releases)
	require.Zero(t, listedAfterDelete, "Owned still listed s once its owner key was deleted")
}

// deletesNested reports whether ops hold a nested Txn deleting key (a
// release).
func deletesNested(ops []clientv3.Op, key string) bool {
	for _, op := range ops {
		if !op.IsTxn() {
			continue
		}
		_, then, _ := op.Txn()
		for _, o := range then {
			if o.IsDelete() && string(o.KeyBytes()) == key {
				return true
			}
		}
	}
	return false
}
