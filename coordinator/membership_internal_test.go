package coordinator

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/baton-go/baton/internal/etcdtest"
)

// keepMember looks at the leaving flag, then writes the member key: a write
// that passed the check just before Leave set the flag, and reaches etcd
// after Leave deleted the key, puts the key back (its Else branch creates
// an absent key). Here the write is the one Leave's own drain asks for
// (memberKick); it is held until Leave has deregistered, then sent as a
// request already on its way would be. The member comes back in the
// group's view until the lease revoke (or, if that fails, its expiry).
func TestLeaveDoesNotPutTheMemberKeyBack(t *testing.T) {
	cluster := etcdtest.NewCluster(t, 1)
	cli, admin := cluster.Client(t), cluster.Client(t)
	ctl := &ctlKV{KV: cli.KV}
	cli.KV = ctl
	var armed atomic.Bool
	arrived, release := make(chan struct{}), make(chan struct{})
	var arriveOnce, waitOnce, releaseOnce sync.Once
	releaseWrite := func() { releaseOnce.Do(func() { close(release) }) }
	defer releaseWrite()
	SetTestHooks(t, TestHooks{DrainCheck: func() {
		if armed.Load() {
			waitOnce.Do(func() { // Leave's drain waits for the write to be under way
				select {
				case <-arrived:
				case <-time.After(5 * time.Second):
				}
			})
		}
	}})
	c, err := New(cli, "g", HandlerFuncs{}, WithMemberID("m1"), WithTTL(2*time.Second))
	require.NoError(t, err)
	memberKey := c.keys.Member("m1")
	ctl.setIntercept(func(tx *ctlTxn) (*clientv3.TxnResponse, error, bool) {
		if !armed.Load() || !tx.puts(memberKey) {
			return nil, nil, false
		}
		first := false
		arriveOnce.Do(func() { first = true })
		if !first {
			return nil, nil, false
		}
		close(arrived)
		// Until Leave has deregistered; a Leave that waits for this write
		// before it deregisters gets it after a while.
		select {
		case <-release:
		case <-time.After(5 * time.Second):
		}
		resp, err := tx.commit(context.WithoutCancel(tx.ctx))
		return resp, err, true
	})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	require.NoError(t, c.Join(ctx))
	require.True(t, etcdtest.WaitUntil(10*time.Second, func() bool {
		c.mu.Lock()
		w := c.w
		c.mu.Unlock()
		if w == nil {
			return false
		}
		w.mu.Lock()
		defer w.mu.Unlock()
		return w.loaded
	}), "the worker loaded")
	resp, err := admin.Get(ctx, memberKey)
	require.NoError(t, err)
	require.Len(t, resp.Kvs, 1)
	wctx, wcancel := context.WithCancel(context.Background())
	defer wcancel()
	events := admin.Watch(wctx, memberKey, clientv3.WithRev(resp.Header.Revision+1))

	armed.Store(true)
	left := make(chan error, 1)
	go func() {
		lctx, lcancel := context.WithTimeout(context.Background(), 15*time.Second)
		defer lcancel()
		left <- c.Leave(lctx)
	}()
	var seen []*clientv3.Event
	deregistered := false
	for !deregistered {
		select {
		case wr := <-events:
			require.NoError(t, wr.Err())
			for _, ev := range wr.Events {
				seen = append(seen, ev)
				deregistered = deregistered || ev.Type == mvccpb.DELETE
			}
		case <-time.After(20 * time.Second):
			t.Fatal("Leave did not deregister")
		}
	}
	releaseWrite() // the write under way reaches etcd now
	select {
	case err := <-left:
		require.NoError(t, err)
	case <-time.After(20 * time.Second):
		t.Fatal("Leave did not return")
	}
	// Everything written to the key until Leave returned: a progress
	// notification at or past the current revision closes the list.
	resp, err = admin.Get(context.Background(), "any")
	require.NoError(t, err)
	for synced := false; !synced; {
		require.NoError(t, admin.RequestProgress(wctx))
		select {
		case wr := <-events:
			require.NoError(t, wr.Err())
			seen = append(seen, wr.Events...)
			synced = wr.Header.Revision >= resp.Header.Revision
		case <-time.After(10 * time.Second):
			t.Fatal("the watch did not catch up")
		}
	}
	var trace []string
	for _, ev := range seen {
		trace = append(trace, fmt.Sprintf("%s@%d(lease %x)", ev.Type, ev.Kv.ModRevision, ev.Kv.Lease))
	}
	afterDelete := false
	for _, ev := range seen {
		if ev.Type == mvccpb.DELETE {
			afterDelete = true
			continue
		}
		require.False(t, afterDelete, "the member key was put back after Leave deleted it: %v", trace)
	}
}
