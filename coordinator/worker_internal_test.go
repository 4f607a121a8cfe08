package coordinator

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/baton-go/baton/assignment"
	"github.com/baton-go/baton/internal/etcdtest"
)

// A claim read the sync's spec while it was broken (or deleted), and the fix
// (or re-add) reached the worker before the actor acted on that read: the
// actor marks the sync gone from the stale read although the newest spec the
// worker has seen is valid, and nothing clears the mark (no further spec
// event comes; the leader's target does not change). The sync, targeted
// here with a valid spec, is never run again (until some watch breaks).
func TestStaleUnreadableClaimDoesNotMarkAFixedSyncGone(t *testing.T) {
	for _, tc := range []struct {
		name  string
		spoil func(t *testing.T, cli *clientv3.Client, key string)
	}{
		{"fixed", func(t *testing.T, cli *clientv3.Client, key string) {
			_, err := cli.Put(context.Background(), key, "{not json")
			require.NoError(t, err)
		}},
		{"readded", func(t *testing.T, cli *clientv3.Client, key string) {
			_, err := cli.Delete(context.Background(), key)
			require.NoError(t, err)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			start := newGate("s")
			SetTestHooks(t, TestHooks{ActorStart: start.pass})
			b := newBareWorker(t)
			ctx := context.Background()
			key := b.w.c.keys.Sync("s")
			require.NoError(t, b.store.Put(ctx, assignment.Sync{ID: "s", Spec: []byte(`{"v":1}`)}))
			tc.spoil(t, b.cli, key)
			// The batched claim reads the broken spec; the actor, started
			// with that result, waits at the gate.
			b.w.applyTarget([]string{"s"})
			select {
			case <-start.arrived:
			case <-time.After(10 * time.Second):
				t.Fatal("the actor of s did not start")
			}
			// The fix, as the syncs watch delivers it, before the actor acts.
			require.NoError(t, b.store.Put(ctx, assignment.Sync{ID: "s", Spec: []byte(`{"v":2}`)}))
			resp, err := b.cli.Get(ctx, key)
			require.NoError(t, err)
			b.w.applySpec(resp.Kvs[0], mvccpb.PUT)
			close(start.open)
			require.True(t, etcdtest.WaitUntil(10*time.Second, func() bool { return b.owned("s") != nil }),
				"s, targeted here with a valid spec (seen by the worker), runs; gone=%v actors=%d",
				b.goneMark("s"), b.w.actorCount())
		})
	}
}

// The claim reads the spec as it is now, while the syncs watch may still be
// delivering older events. applySpec weighs an unreadable (or deleted)
// spec without looking at its revision: an event older than the spec the
// owner already runs marks the sync gone and revokes it (Removed), and the
// next event brings it back: a restart of a sync whose spec is fine.
func TestStaleSpecEventDoesNotRevokeANewerSpec(t *testing.T) {
	b := newBareWorker(t)
	ctx := context.Background()
	key := b.w.c.keys.Sync("s")
	require.NoError(t, b.store.Put(ctx, assignment.Sync{ID: "s", Spec: []byte(`{"v":1}`)}))
	broken, err := b.cli.Put(ctx, key, "{not json")
	require.NoError(t, err)
	require.NoError(t, b.store.Put(ctx, assignment.Sync{ID: "s", Spec: []byte(`{"v":2}`)}))
	b.w.applyTarget([]string{"s"}) // claims s, reading v2
	require.True(t, etcdtest.WaitUntil(10*time.Second, func() bool { return b.owned("s") != nil }), "s runs")
	require.JSONEq(t, `{"v":2}`, string(b.owned("s").Sync().Spec))
	// The watch catches up: the broken spec, older than v2.
	b.w.applySpec(&mvccpb.KeyValue{Key: []byte(key), Value: []byte("{not json"), ModRevision: broken.Header.Revision}, mvccpb.PUT)
	b.w.mu.Lock()
	a, gone := b.w.actors["s"], b.w.gone["s"]
	want := a != nil && a.want
	b.w.mu.Unlock()
	require.True(t, want && !gone, "an event older than the running spec does not revoke s (want=%v gone=%v)", want, gone)
}

// A reload reads the specs of the syncs it has an opinion on at one
// revision, then the target at a later one, and the watches resume after
// the target's revision: a spec change that falls between the two reads is
// never seen. Here the fix of a sync marked gone lands in that gap: the
// sync stays gone, targeted here with a valid spec, and never runs (until
// the next watch break). The same gap hides a spec change of an owned sync.
func TestReloadMissesASpecChangeBetweenItsReads(t *testing.T) {
	b := newBareWorker(t)
	ctx := context.Background()
	syncKey, targetKey := b.w.c.keys.Sync("s"), b.w.c.keys.Target("m1")
	_, err := b.cli.Put(ctx, syncKey, "{not json")
	require.NoError(t, err)
	_, err = b.cli.Put(ctx, targetKey, string(encodeTarget(1, []string{"s"})))
	require.NoError(t, err)
	_, _, err = b.w.load() // claims s, finds it unreadable: gone
	require.NoError(t, err)
	require.True(t, etcdtest.WaitUntil(10*time.Second, func() bool {
		return b.goneMark("s") && b.w.actorCount() == 0
	}), "s is marked gone")

	// The watches broke; the fix lands after the reload read the specs,
	// just before it reads the target.
	fix, err := encodeSync(assignment.Sync{ID: "s", Spec: []byte(`{"v":2}`)})
	require.NoError(t, err)
	var once sync.Once
	var fixed atomic.Bool
	// No goroutine of the worker uses the client's KV now.
	b.interceptTxns(func(tx *ctlTxn) (*clientv3.TxnResponse, error, bool) {
		if tx.reads(targetKey) {
			once.Do(func() {
				_, err := b.cli.Put(ctx, syncKey, string(fix)) // a Put: not intercepted
				fixed.Store(err == nil)
			})
		}
		return nil, nil, false
	})
	rev, specRev, err := b.w.reload()
	require.NoError(t, err)
	require.True(t, fixed.Load(), "the fix was written during the reload")
	// Follow from the revisions the reload returned, as run does.
	b.w.actorsWG.Add(1)
	go func() { defer b.w.actorsWG.Done(); b.w.follow(rev, specRev) }()
	require.True(t, etcdtest.WaitUntil(10*time.Second, func() bool { return b.owned("s") != nil }),
		"s, fixed during the reload, runs; gone=%v", b.goneMark("s"))
}

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
	b := newBareWorker(t)
	ctx := context.Background()
	require.NoError(t, b.store.Put(ctx, assignment.Sync{ID: "s"}))
	targetKey, memberKey := b.w.c.keys.Target("m1"), b.w.c.keys.Member("m1")
	stuck := make(chan struct{})
	var once sync.Once
	var armed bool
	var armedMu sync.Mutex
	b.interceptTxns(func(tx *ctlTxn) (*clientv3.TxnResponse, error, bool) {
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
	b.run()
	_, err := b.cli.Put(ctx, targetKey, string(encodeTarget(1, []string{"s"})))
	require.NoError(t, err)
	require.True(t, etcdtest.WaitUntil(10*time.Second, func() bool { return b.owned("s") != nil }), "s runs")

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
	require.True(t, etcdtest.WaitUntil(3*b.w.sess.ttl, func() bool { return b.owned("s") == nil }),
		"s, moved away, is revoked while one member-key write is stuck")
}
