package coordinator

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/baton-go/baton/assignment"
)

// Tests from the review of the member side's rewrite (commits 495a78e,
// 4c2b4b6). Each fails on the code it was written against.

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
			b.w.applySpec(resp.Kvs[0], false)
			close(start.open)
			require.True(t, waitUntilInternal(10*time.Second, func() bool { return b.owned("s") != nil }),
				"s, targeted here with a valid spec (seen by the worker), runs; gone=%v actors=%d",
				b.goneMark("s"), b.w.actorCount())
		})
	}
}

func (b *bareWorker) goneMark(id string) bool {
	b.w.mu.Lock()
	defer b.w.mu.Unlock()
	return b.w.gone[id]
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
	require.True(t, waitUntilInternal(10*time.Second, func() bool { return b.owned("s") != nil }), "s runs")
	require.JSONEq(t, `{"v":2}`, string(b.owned("s").Sync().Spec))
	// The watch catches up: the broken spec, older than v2.
	b.w.applySpec(&mvccpb.KeyValue{Key: []byte(key), Value: []byte("{not json"), ModRevision: broken.Header.Revision}, false)
	b.w.mu.Lock()
	a, gone := b.w.actors["s"], b.w.gone["s"]
	want := a != nil && a.want
	b.w.mu.Unlock()
	require.True(t, want && !gone, "an event older than the running spec does not revoke s (want=%v gone=%v)", want, gone)
}
