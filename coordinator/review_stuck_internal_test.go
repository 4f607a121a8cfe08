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

// The worker's follow loop now sends etcd requests of its own: the
// member-key write (keepMember, on a Drain, an Admin.Drain request, any
// member-key event) and the lease's keys (reconcile, on a recheck). Unlike
// the claims and releases (txnBatcher: abandoned after TTL/2, because "a
// Txn stuck on an unresponsive etcd member must not hold the worker up"),
// they have no time limit but the epoch's end. One such request stuck on
// an unresponsive etcd member (a partition the client has not noticed; the
// lease is still renewed through the other members) wedges follow: target
// changes are no longer applied, so a sync moved away is never revoked
// and its new owner waits for its key. Here: a Drain's member-key write is
// stuck, then the leader moves s away.
func TestStuckMemberWriteDoesNotStopTargetChanges(t *testing.T) {
	runDone := make(chan struct{})
	t.Cleanup(func() { <-runDone }) // after the bare worker's cleanup has stopped it
	b := newBareWorker(t)
	ctx := context.Background()
	require.NoError(t, b.store.Put(ctx, assignment.Sync{ID: "s"}))
	targetKey, memberKey := b.w.c.keys.Target("m1"), b.w.c.keys.Member("m1")
	ctl := &ctlKV{KV: b.cli.KV}
	stuck := make(chan struct{})
	var once sync.Once
	var armed bool
	var armedMu sync.Mutex
	ctl.setIntercept(func(tx *ctlTxn) (*clientv3.TxnResponse, error, bool) {
		armedMu.Lock()
		a := armed
		armedMu.Unlock()
		if !a || !tx.puts(memberKey) {
			return nil, nil, false
		}
		first := false
		once.Do(func() { first = true })
		if !first {
			return nil, nil, false
		}
		// Sent to an etcd member that no longer answers: it ends only
		// with its ctx.
		close(stuck)
		<-tx.ctx.Done()
		return nil, tx.ctx.Err(), true
	})
	b.cli.KV = ctl // before the worker runs
	go func() { defer close(runDone); b.w.run() }()
	_, err := b.cli.Put(ctx, targetKey, string(encodeTarget(1, []string{"s"})))
	require.NoError(t, err)
	require.True(t, waitUntilInternal(10*time.Second, func() bool { return b.owned("s") != nil }), "s runs")

	// Drain: the worker writes the flag into the member key; that write
	// gets stuck.
	armedMu.Lock()
	armed = true
	armedMu.Unlock()
	b.w.c.draining.Store(true)
	poke(b.w.memberKick)
	select {
	case <-stuck:
	case <-time.After(10 * time.Second):
		t.Fatal("the member-key write was not sent")
	}
	// The leader moves s away.
	_, err = b.cli.Put(ctx, targetKey, string(encodeTarget(2, nil)))
	require.NoError(t, err)
	require.True(t, waitUntilInternal(3*b.w.sess.ttl, func() bool { return b.owned("s") == nil }),
		"s, moved away, is revoked while one member-key write is stuck")
}
