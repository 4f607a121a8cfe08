package coordinator_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/baton-go/baton/coordinator"
)

// TestBalancerIsNeverCalledConcurrently: rebalance.Balancer's contract
// says "The leader calls Balance from one goroutine, never concurrently
// with itself". A call abandoned at its budget keeps running, and the
// next round calls the Balancer again meanwhile: a stateful Balancer that
// relies on the contract races (a concurrent map write is fatal).
func TestBalancerIsNeverCalledConcurrently(t *testing.T) {
	w := newWorld(t, nil)
	bal := newHangingBalancer(t)
	m1 := w.join("m1", nil, nil, coordinator.WithBalancer(bal))
	require.True(t, waitUntil(5*time.Second, m1.co.IsLeader))
	w.putSyncs("a0")
	w.waitOwned([]string{"a0"}, 5*time.Second)
	bal.armed.Store(true)
	w.putSyncs("a1")
	select {
	case <-bal.hung:
	case <-time.After(10 * time.Second):
		t.Fatal("the balancer was not called")
	}
	w.putSyncs("b0")
	w.waitOwned([]string{"a0", "a1", "b0"}, 10*time.Second)
	require.LessOrEqual(t, bal.maxRunning.Load(), int32(1), "Balance calls running at once")
}
