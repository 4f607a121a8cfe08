package coordinator_test

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"

	"github.com/baton-go/baton/assignment"
	"github.com/baton-go/baton/coordinator"
	"github.com/baton-go/baton/rebalance"
)

// hangingBalancer is Sticky, except that while armed its next call blocks,
// ignoring its ctx, until release is closed (at cleanup, so goleak passes).
type hangingBalancer struct {
	armed   atomic.Bool
	always  atomic.Bool // every call hangs, not only the next armed one
	hung    chan struct{}
	release chan struct{}
	once    sync.Once

	running, maxRunning atomic.Int32
}

func newHangingBalancer(t *testing.T) *hangingBalancer {
	b := &hangingBalancer{hung: make(chan struct{}, 100), release: make(chan struct{})}
	t.Cleanup(b.unblock)
	return b
}

func (b *hangingBalancer) unblock() { b.once.Do(func() { close(b.release) }) }

func (b *hangingBalancer) Balance(ctx context.Context, in rebalance.Input) (assignment.Plan, error) {
	n := b.running.Add(1)
	defer b.running.Add(-1)
	for {
		m := b.maxRunning.Load()
		if n <= m || b.maxRunning.CompareAndSwap(m, n) {
			break
		}
	}
	if b.always.Load() || b.armed.CompareAndSwap(true, false) {
		b.hung <- struct{}{}
		<-b.release // ignores ctx, on purpose
	}
	return rebalance.Sticky().Balance(ctx, in)
}

// TestHungBalancerDoesNotWedgeTheGroup: a Balancer call that ignores its
// ctx is abandoned at its budget; syncs added afterwards are placed by the
// next calls, and the leader's Leave stays bounded by its ctx.
func TestHungBalancerDoesNotWedgeTheGroup(t *testing.T) {
	w := newWorld(t, nil)
	bal := newHangingBalancer(t)
	m1 := w.join("m1", nil, nil, coordinator.WithBalancer(bal))
	require.True(t, waitUntil(5*time.Second, m1.co.IsLeader))
	w.join("m2", nil, nil, coordinator.WithBalancer(bal))
	w.putSyncs("a0")
	w.waitOwned([]string{"a0"}, 5*time.Second)

	bal.armed.Store(true)
	w.putSyncs("a1")
	select {
	case <-bal.hung:
	case <-time.After(10 * time.Second):
		t.Fatal("the balancer was not called")
	}
	ids := []string{"a0", "a1", "b0", "b1", "b2", "b3", "b4", "b5"}
	w.putSyncs(ids[2:]...)
	w.waitOwned(ids, 10*time.Second)

	// The abandoned call still hangs; Leave of the leader returns within
	// its ctx (plus the short grace a late Leave gives its etcd calls).
	left := make(chan error, 1)
	start := time.Now()
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		defer cancel()
		left <- m1.co.Leave(ctx)
	}()
	select {
	case <-left:
		t.Logf("Leave(3s ctx) of the leader returned after %v", time.Since(start).Round(time.Millisecond))
	case <-time.After(10 * time.Second):
		t.Fatal("Leave of the leader did not return while an abandoned Balancer call hangs")
	}
}

// TestAbandonedBalancerCallsAreBounded: a Balancer that hangs on every
// call does not leak without bound: beyond the bound the call is skipped
// and counted.
func TestAbandonedBalancerCallsAreBounded(t *testing.T) {
	w := newWorld(t, nil)
	bal := newHangingBalancer(t)
	reg := prometheus.NewRegistry()
	m1 := w.join("m1", nil, nil, coordinator.WithBalancer(bal), coordinator.WithMetrics(reg))
	require.True(t, waitUntil(5*time.Second, m1.co.IsLeader))
	owned := []string{"p0", "p1", "p2"}
	w.putSyncs(owned...)
	w.waitOwned(owned, 5*time.Second, "m1")
	bal.always.Store(true)
	w.join("m2", nil, nil, coordinator.WithBalancer(bal))
	ids := owned
	for i := 0; ; i++ {
		ids = append(ids, fmt.Sprintf("s%d", i))
		w.putSyncs(ids[len(ids)-1])
		if waitUntil(2*time.Second, func() bool {
			return gather(t, reg).sum("baton_balancer_errors_total", map[string]string{"kind": "skipped"}) > 0
		}) {
			break
		}
		require.Less(t, i, 20, "no call was skipped")
	}
	require.LessOrEqual(t, bal.maxRunning.Load(), int32(2), "abandoned calls running at once")
	require.Positive(t, gather(t, reg).sum("baton_balancer_errors_total", map[string]string{"kind": "timeout"}))

	// m1 still runs p0..p2; its drain can never complete (no plan can be
	// made), yet Leave of the leader returns once its ctx ends.
	left := make(chan error, 1)
	start := time.Now()
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		left <- m1.co.Leave(ctx)
	}()
	select {
	case err := <-left:
		t.Logf("Leave(2s ctx) returned after %v: %v", time.Since(start).Round(time.Millisecond), err)
	case <-time.After(10 * time.Second):
		t.Fatal("Leave of the leader did not return while every Balancer call hangs")
	}
	bal.unblock()
	// Once the calls return, the new leader balances again.
	w.waitOwned(ids, 15*time.Second, "m2")
}
