package coordinator

import (
	"context"
	"errors"
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

// An actor that claimed a sync but is no longer wanted gives the key back.
// Before the fix it left the worker's map first: a new actor for the same
// sync, started meanwhile, found the key still there as its own and ran
// with it; then the old actor's delete (guarded by the same token) went
// through, and the sync ran with no owner key, free for any other member
// to claim.
func TestNoAdoptionWhileAReleaseIsPending(t *testing.T) {
	start, giveBack := newGate("s"), newGate("s")
	SetTestHooks(t, TestHooks{ActorStart: start.pass, GiveBack: giveBack.pass})
	b := newBareWorker(t)
	ctx := context.Background()
	require.NoError(t, b.store.Put(ctx, assignment.Sync{ID: "s"}))

	b.w.applyTarget([]string{"s"}) // claims s; its actor waits at the start gate
	require.NotNil(t, b.ownerKey("s"))
	b.w.applyTarget(nil) // s is no longer wanted
	close(start.open)
	<-giveBack.arrived // the actor is about to delete its key
	b.w.applyTarget([]string{"s"})
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	deletes := b.cli.Watch(wctx, b.w.c.keys.Owner("s"), clientv3.WithFilterPut())
	close(giveBack.open)
	select {
	case <-deletes:
	case <-time.After(10 * time.Second):
		t.Fatal("the unwanted claim was not given back")
	}
	require.True(t, etcdtest.WaitUntil(10*time.Second, func() bool {
		kv, c := b.ownerKey("s"), b.owned("s")
		return kv != nil && c != nil && kv.CreateRevision == c.Token()
	}), "s runs with its owner key held: key %v, claim %v", b.ownerKey("s"), b.owned("s"))
}

// A sync claimed with an unreadable spec is given back even when the first
// delete fails. Before the fix that delete was tried once ("the lease will
// free it", which it does not while the member lives).
func TestReleaseOfAnUnrunnableSyncIsRetried(t *testing.T) {
	b := newBareWorker(t)
	fail, seen := failFirstTxns(1, false)
	b.w.releaseTxns.cli = &ctlKV{KV: b.cli.KV, intercept: fail}
	_, err := b.cli.Put(context.Background(), b.w.c.keys.Sync("s"), "{not json")
	require.NoError(t, err)
	b.w.applyTarget([]string{"s"})
	require.True(t, etcdtest.WaitUntil(10*time.Second, func() bool {
		return b.ownerKey("s") == nil && seen() > 1
	}), "the owner key of the unrunnable sync was deleted after a failed try")
	require.Zero(t, b.assigns.Load())
}

// A claim that etcd applied but whose answer was an error is not left
// behind when the sync is no longer wanted. Before the fix the actor left
// without knowing the key was there, on a lease that lives on.
func TestClaimAppliedDespiteAnErrorIsGivenBack(t *testing.T) {
	start := newGate("s")
	SetTestHooks(t, TestHooks{ActorStart: start.pass})
	b := newBareWorker(t)
	fail, _ := failFirstTxns(1, true)
	b.w.claimTxns.cli = &ctlKV{KV: b.cli.KV, intercept: fail}
	require.NoError(t, b.store.Put(context.Background(), assignment.Sync{ID: "s"}))
	b.w.applyTarget([]string{"s"}) // the batched claim goes through, its answer is lost
	require.NotNil(t, b.ownerKey("s"), "the claim was applied")
	b.w.applyTarget(nil)
	close(start.open)
	require.True(t, etcdtest.WaitUntil(10*time.Second, func() bool { return b.ownerKey("s") == nil }),
		"the owner key of the claim whose answer was lost was deleted")
	require.Zero(t, b.assigns.Load())
}

// OnAssign never starts once the lease is at risk: the member could not
// stop the work by its deadline. Before the fix the worker called it
// anyway, after a claim and after an OnRevoke(SpecChanged).
func TestNoAssignOnceTheLeaseIsAtRisk(t *testing.T) {
	for _, respec := range []bool{false, true} {
		name := map[bool]string{false: "claim", true: "respec"}[respec]
		t.Run(name, func(t *testing.T) {
			var calls atomic.Int64
			var b *bareWorker
			lose := 1
			if respec {
				lose = 2
			}
			SetTestHooks(t, TestHooks{BeforeAssign: func(id string, lost <-chan struct{}) {
				if calls.Add(1) == int64(lose) {
					b.w.sess.markAtRisk(errors.New("test: lease at risk"))
					<-lost
				}
			}})
			b = newBareWorker(t)
			ctx := context.Background()
			require.NoError(t, b.store.Put(ctx, assignment.Sync{ID: "s", Spec: []byte(`{"v":1}`)}))
			b.w.applyTarget([]string{"s"})
			if respec {
				require.True(t, etcdtest.WaitUntil(10*time.Second, func() bool { return b.assigns.Load() == 1 }))
				require.NoError(t, b.store.Put(ctx, assignment.Sync{ID: "s", Spec: []byte(`{"v":2}`)}))
				resp, err := b.cli.Get(ctx, b.w.c.keys.Sync("s"))
				require.NoError(t, err)
				b.w.applySpec(resp.Kvs[0], mvccpb.PUT)
			}
			require.True(t, etcdtest.WaitUntil(10*time.Second, func() bool {
				return calls.Load() == int64(lose) && b.w.actorCount() == 0
			}), "the actor stopped")
			require.Equal(t, int64(lose-1), b.assigns.Load(), "no OnAssign after the lease came at risk")
		})
	}
}

// Owned lists a claim only while its owner key is this member's: a caller
// who sees the owner key gone from etcd (batonctl describe, a test, an
// operator) must not still find the claim in Owned. The release used to
// delete the key first and forget the claim after, so Owned lagged etcd
// (TestBatonctl failed on it in CI, 1 run in about 20).
func TestOwnedForgetsAClaimBeforeItsKeyIsDeleted(t *testing.T) {
	b := newBareWorker(t)
	ctx := context.Background()
	require.NoError(t, b.store.Put(ctx, assignment.Sync{ID: "s"}))
	ownerKey, targetKey := b.w.c.keys.Owner("s"), b.w.c.keys.Target("m1")
	var mu sync.Mutex
	var releases, listedAfterDelete int
	b.interceptTxns(func(tx *ctlTxn) (*clientv3.TxnResponse, error, bool) {
		if !tx.releases(ownerKey) {
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
	b.run()
	_, err := b.cli.Put(ctx, targetKey, string(encodeTarget(1, []string{"s"})))
	require.NoError(t, err)
	require.True(t, etcdtest.WaitUntil(10*time.Second, func() bool { return b.owned("s") != nil }), "s runs")

	_, err = b.cli.Put(ctx, targetKey, string(encodeTarget(2, nil)))
	require.NoError(t, err)
	// The key is gone from etcd a moment before the release's answer
	// reaches the intercept: wait for both.
	require.True(t, etcdtest.WaitUntil(10*time.Second, func() bool {
		if b.ownerKey("s") != nil {
			return false
		}
		mu.Lock()
		defer mu.Unlock()
		return releases > 0
	}), "s released")
	mu.Lock()
	defer mu.Unlock()
	require.Equal(t, 1, releases)
	require.Zero(t, listedAfterDelete, "Owned still listed s once its owner key was deleted")
}

// An actor gave back a claim whose answer was an error (a lease-guarded
// delete that found nothing), so the worker is to look for keys on its
// lease "once more a TTL later", in case etcd applies the claim after that
// delete. The pending look lives in follow's local variable: when the
// watches break (here: a failed member-key write makes follow return) the
// reload reconciles at once and the new follow starts with no look pending.
// The claim applied after that reload leaves an owner key on the live lease
// with no actor, and nothing ever looks again while no watch breaks: the
// sync, moved elsewhere, waits for that key for good.
func TestLateClaimAfterAReloadIsStillLookedFor(t *testing.T) {
	start := newGate("s")
	SetTestHooks(t, TestHooks{ActorStart: start.pass})
	b := newBareWorker(t)
	ctx := context.Background()
	require.NoError(t, b.store.Put(ctx, assignment.Sync{ID: "s"}))
	ownerKey, targetKey := b.w.c.keys.Owner("s"), b.w.c.keys.Target("m1")

	var late func()
	var lateMu sync.Mutex
	var targetReads atomic.Int64
	b.interceptTxns(func(tx *ctlTxn) (*clientv3.TxnResponse, error, bool) {
		switch {
		case tx.claims(ownerKey):
			lateMu.Lock()
			defer lateMu.Unlock()
			if late == nil {
				// The claim's answer is lost; etcd applies it later.
				late = func() { _, _ = tx.commit(context.Background()) }
				return nil, errors.New("test: claim answer lost"), true
			}
		case tx.reads(targetKey):
			targetReads.Add(1)
		}
		return nil, nil, false
	})
	bw := &breakableWatcher{Watcher: b.cli.Watcher, key: targetKey}
	b.cli.Watcher = bw
	b.run()
	require.True(t, etcdtest.WaitUntil(10*time.Second, func() bool { return targetReads.Load() == 1 }), "loaded")

	// s is targeted here: the batched claim's answer is lost. Its actor
	// waits at the gate while s moves away, then gives the unknown claim
	// back (nothing to delete yet) and tells the worker to look again later.
	_, err := b.cli.Put(ctx, targetKey, string(encodeTarget(1, []string{"s"})))
	require.NoError(t, err)
	select {
	case <-start.arrived:
	case <-time.After(10 * time.Second):
		t.Fatal("the actor of s did not start")
	}
	_, err = b.cli.Put(ctx, targetKey, string(encodeTarget(2, nil)))
	require.NoError(t, err)
	require.True(t, etcdtest.WaitUntil(10*time.Second, func() bool {
		b.w.mu.Lock()
		defer b.w.mu.Unlock()
		return !b.w.target["s"]
	}), "s left the target")
	close(start.open)
	require.True(t, etcdtest.WaitUntil(10*time.Second, func() bool {
		return b.w.actorCount() == 0 && len(b.w.suspectKick) == 0
	}), "the unknown claim was given back and follow took the note")

	// The target watch breaks: follow returns and the worker reloads
	// (reconciling at once: nothing on the lease yet).
	bw.breakAll()
	require.True(t, etcdtest.WaitUntil(10*time.Second, func() bool { return targetReads.Load() == 2 }), "reloaded")

	// Now etcd applies the lost claim: an owner key on the live lease, no
	// actor, s targeted nowhere here.
	lateMu.Lock()
	apply := late
	lateMu.Unlock()
	apply()
	resp, err := b.cli.Get(ctx, ownerKey)
	require.NoError(t, err)
	require.Len(t, resp.Kvs, 1, "the late claim was applied")
	require.True(t, etcdtest.WaitUntil(4*b.w.sess.ttl, func() bool {
		r, err := b.cli.Get(ctx, ownerKey)
		return err == nil && len(r.Kvs) == 0
	}), "the owner key of the claim applied late (on the live lease, no actor) was given back")
}
