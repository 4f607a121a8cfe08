package coordinator_test

import (
	"context"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/baton-go/baton/assignment"
	"github.com/baton-go/baton/coordinator"
)

// breakingWatcher breaks (as etcd does on a leader loss, with
// WithRequireLeader) the first watch on prefix made without a start
// revision once armed: the one Leave's drain keeps on the members.
type breakingWatcher struct {
	clientv3.Watcher
	prefix string
	armed  atomic.Bool
	once   sync.Once
	broke  chan struct{}
}

func (b *breakingWatcher) Watch(ctx context.Context, key string, opts ...clientv3.OpOption) clientv3.WatchChan {
	op := clientv3.OpGet(key, opts...)
	if b.armed.Load() && key == b.prefix && op.IsOptsWithPrefix() && op.Rev() == 0 {
		first := false
		b.once.Do(func() { first = true })
		if first {
			ch := make(chan clientv3.WatchResponse, 1)
			ch <- clientv3.WatchResponse{Canceled: true, CancelReason: "etcdserver: no leader"}
			close(ch)
			close(b.broke)
			return ch
		}
	}
	return b.Watcher.Watch(ctx, key, opts...)
}

// Leave's drain stops early once no other member can take the syncs
// (drainForLeave), which it learns from a watch on the members. When that
// watch breaks (an etcd leader change), drainForLeave gives up watching
// ("the drain runs on to its ctx") instead of watching again. If the other
// members then drain or leave, nobody can take the syncs, the drain never
// completes, and Leave with a ctx that has no deadline never returns.
func TestLeaveReturnsWhenItsMembersWatchBroke(t *testing.T) {
	w := newWorld(t, nil)
	ids := syncIDs(4)
	w.putSyncs(ids...)
	cli := w.cluster.Client(t)
	bw := &breakingWatcher{Watcher: cli.Watcher, prefix: "/baton/" + w.group + "/members/", broke: make(chan struct{})}
	cli.Watcher = bw
	// m1's first revoke for the drain waits until m2 has gone, so m1 is
	// not drained before.
	hold := make(chan struct{})
	var holdOnce sync.Once
	rec := w.handler("m1")
	h := coordinator.HandlerFuncs{
		Assign: rec.Assign,
		Revoke: func(ctx context.Context, c *assignment.Claim, why assignment.RevokeReason) {
			if why == assignment.Draining {
				holdOnce.Do(func() {
					select {
					case <-hold:
					case <-time.After(30 * time.Second):
					}
				})
			}
			rec.Revoke(ctx, c, why)
		},
	}
	m1 := w.join("m1", cli, h)
	m2 := w.join("m2", nil, nil)
	w.settle(ids, "m1", "m2")

	bw.armed.Store(true)
	left := make(chan error, 1)
	go func() { left <- m1.co.Leave(context.Background()) }()
	select {
	case <-bw.broke:
	case <-time.After(10 * time.Second):
		t.Fatal("Leave's drain did not watch the members")
	}
	require.True(t, waitUntil(10*time.Second, func() bool {
		r, err := w.admin.Get(context.Background(), "/baton/"+w.group+"/members/m1")
		return err == nil && len(r.Kvs) == 1 && strings.Contains(string(r.Kvs[0].Value), `"draining":true`)
	}), "m1 says it drains")
	// m2 leaves: m1 drains, so m2 is alone and goes at once.
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	require.NoError(t, m2.co.Leave(ctx))
	close(hold)
	select {
	case err := <-left:
		require.NoError(t, err)
	case <-time.After(20 * time.Second):
		t.Fatal("m1's Leave(context.Background()) hung: nobody is left to take its syncs, and its members watch had broken")
	}
}
