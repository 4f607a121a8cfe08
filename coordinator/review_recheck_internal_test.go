package coordinator

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/baton-go/baton/assignment"
)

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
	runDone := make(chan struct{})
	start := newGate("s")
	SetTestHooks(t, TestHooks{ActorStart: start.pass})
	t.Cleanup(func() { <-runDone }) // after the bare worker's cleanup has stopped it
	b := newBareWorker(t)
	ctx := context.Background()
	require.NoError(t, b.store.Put(ctx, assignment.Sync{ID: "s"}))
	ownerKey, targetKey := b.w.c.keys.Owner("s"), b.w.c.keys.Target("m1")

	ctl := &ctlKV{KV: b.cli.KV}
	var late func()
	var lateMu sync.Mutex
	var targetReads atomic.Int64
	ctl.setIntercept(func(tx *ctlTxn) (*clientv3.TxnResponse, error, bool) {
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
	b.cli.KV = ctl // before the worker runs
	bw := &breakableWatcher{Watcher: b.cli.Watcher, key: targetKey}
	b.cli.Watcher = bw
	go func() { defer close(runDone); b.w.run() }()
	require.True(t, waitUntilInternal(10*time.Second, func() bool { return targetReads.Load() == 1 }), "loaded")

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
	require.True(t, waitUntilInternal(10*time.Second, func() bool {
		b.w.mu.Lock()
		defer b.w.mu.Unlock()
		return !b.w.target["s"]
	}), "s left the target")
	close(start.open)
	require.True(t, waitUntilInternal(10*time.Second, func() bool {
		return b.w.actorCount() == 0 && len(b.w.suspectKick) == 0
	}), "the unknown claim was given back and follow took the note")

	// The target watch breaks: follow returns and the worker reloads
	// (reconciling at once: nothing on the lease yet).
	bw.breakAll()
	require.True(t, waitUntilInternal(10*time.Second, func() bool { return targetReads.Load() == 2 }), "reloaded")

	// Now etcd applies the lost claim: an owner key on the live lease, no
	// actor, s targeted nowhere here.
	lateMu.Lock()
	apply := late
	lateMu.Unlock()
	apply()
	resp, err := b.cli.Get(ctx, ownerKey)
	require.NoError(t, err)
	require.Len(t, resp.Kvs, 1, "the late claim was applied")
	require.True(t, waitUntilInternal(4*b.w.sess.ttl, func() bool {
		r, err := b.cli.Get(ctx, ownerKey)
		return err == nil && len(r.Kvs) == 0
	}), "the owner key of the claim applied late (on the live lease, no actor) was given back")
}

// breakableWatcher passes watches through, and lets a test break the ones
// on key (their channels close, as on an etcd leader loss).
type breakableWatcher struct {
	clientv3.Watcher
	key string

	mu     sync.Mutex
	breaks []chan struct{}
}

func (bw *breakableWatcher) Watch(ctx context.Context, key string, opts ...clientv3.OpOption) clientv3.WatchChan {
	ch := bw.Watcher.Watch(ctx, key, opts...)
	if key != bw.key {
		return ch
	}
	brk := make(chan struct{})
	bw.mu.Lock()
	bw.breaks = append(bw.breaks, brk)
	bw.mu.Unlock()
	out := make(chan clientv3.WatchResponse)
	go func() {
		defer close(out)
		for {
			select {
			case wr, ok := <-ch:
				if !ok {
					return
				}
				select {
				case out <- wr:
				case <-brk:
					return
				case <-ctx.Done():
					return
				}
			case <-brk:
				return
			case <-ctx.Done():
				return
			}
		}
	}()
	return out
}

func (bw *breakableWatcher) breakAll() {
	bw.mu.Lock()
	defer bw.mu.Unlock()
	for _, b := range bw.breaks {
		close(b)
	}
	bw.breaks = nil
}
