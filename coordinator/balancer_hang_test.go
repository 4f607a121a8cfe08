package coordinator_test

import (
	"context"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"

	"github.com/baton-go/baton/assignment"
	"github.com/baton-go/baton/coordinator"
	"github.com/baton-go/baton/internal/etcdtest"
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

// waitHung waits until a call hangs.
func (b *hangingBalancer) waitHung(t *testing.T) {
	t.Helper()
	select {
	case <-b.hung:
	case <-time.After(10 * time.Second):
		t.Fatal("the balancer was not called")
	}
}

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
	require.True(t, etcdtest.WaitUntil(5*time.Second, m1.co.IsLeader))
	w.join("m2", nil, nil, coordinator.WithBalancer(bal))
	w.putSyncs("a0")
	w.waitOwned([]string{"a0"}, 5*time.Second)

	bal.armed.Store(true)
	w.putSyncs("a1")
	bal.waitHung(t)
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

// TestBalancerThatHangsOnEveryCallFallsBack: a Balancer that hangs on
// every call is called once, abandoned at its budget, and not called
// again while that call runs (so never concurrently with itself, and no
// goroutine leaks per round): the built-in Sticky balancer places syncs
// meanwhile, counted as "fallback".
func TestBalancerThatHangsOnEveryCallFallsBack(t *testing.T) {
	w := newWorld(t, nil)
	bal := newHangingBalancer(t)
	reg := prometheus.NewRegistry()
	m1 := w.join("m1", nil, nil, coordinator.WithBalancer(bal), coordinator.WithMetrics(reg))
	require.True(t, etcdtest.WaitUntil(5*time.Second, m1.co.IsLeader))
	owned := []string{"p0", "p1", "p2"}
	w.putSyncs(owned...)
	w.waitOwned(owned, 5*time.Second, "m1")
	bal.always.Store(true)
	w.join("m2", nil, nil)
	bal.waitHung(t)
	ids := append(slices.Clone(owned), "s0", "s1", "s2", "s3")
	for _, id := range ids[len(owned):] {
		w.putSyncs(id)
		w.waitOwned(ids[:slices.Index(ids, id)+1], 10*time.Second)
	}
	s := gather(t, reg)
	require.Positive(t, s.sum("baton_balancer_errors_total", map[string]string{"kind": "timeout"}))
	require.Positive(t, s.sum("baton_balancer_errors_total", map[string]string{"kind": "fallback"}))
	require.Equal(t, int32(1), bal.maxRunning.Load(), "Balance calls running at once")
	require.Len(t, bal.hung, 0, "the Balancer was called again while its abandoned call ran")

	// Leave of the leader drains m1 (the fallback plans the moves) and
	// returns although the abandoned call still hangs.
	left := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		left <- m1.co.Leave(ctx)
	}()
	select {
	case err := <-left:
		require.NoError(t, err)
	case <-time.After(15 * time.Second):
		t.Fatal("Leave of the leader did not return while its Balancer call hangs")
	}
	w.waitOwned(ids, 10*time.Second, "m2")
	bal.unblock()
}

// TestBalancerIsNeverCalledConcurrently: rebalance.Balancer's contract
// says "The leader calls Balance from one goroutine, never concurrently
// with itself". A call abandoned at its budget keeps running, and the
// next round calls the Balancer again meanwhile: a stateful Balancer that
// relies on the contract races (a concurrent map write is fatal).
func TestBalancerIsNeverCalledConcurrently(t *testing.T) {
	w := newWorld(t, nil)
	bal := newHangingBalancer(t)
	m1 := w.join("m1", nil, nil, coordinator.WithBalancer(bal))
	require.True(t, etcdtest.WaitUntil(5*time.Second, m1.co.IsLeader))
	w.putSyncs("a0")
	w.waitOwned([]string{"a0"}, 5*time.Second)
	bal.armed.Store(true)
	w.putSyncs("a1")
	bal.waitHung(t)
	w.putSyncs("b0")
	w.waitOwned([]string{"a0", "a1", "b0"}, 10*time.Second)
	require.LessOrEqual(t, bal.maxRunning.Load(), int32(1), "Balance calls running at once")
}
