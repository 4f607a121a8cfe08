package coordinator_test

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/baton-go/baton/assignment"
	"github.com/baton-go/baton/coordinator"
	"github.com/baton-go/baton/rebalance"
)

// TestFailingSyncDoesNotRerunTheBalancer: a sync whose OnAssign always
// fails is claimed and given back on each retry. These owner events are
// no move in flight (the sync is never on another live member), yet while
// it is unowned movesInFlight says so, and each retry reruns the Balancer
// on the whole group; before the throttled-rollout change no owner event
// reran it once a round had nothing to write.
func TestFailingSyncDoesNotRerunTheBalancer(t *testing.T) {
	w := newWorld(t, nil)
	ids := syncIDs(4)
	w.putSyncs(ids...)
	var calls atomic.Int32
	bal := rebalance.BalancerFunc(func(ctx context.Context, in rebalance.Input) (assignment.Plan, error) {
		calls.Add(1)
		return rebalance.Sticky().Balance(ctx, in)
	})
	var attempts atomic.Int32
	h := w.handler("m1")
	assign := h.Assign
	h.Assign = func(ctx context.Context, c *assignment.Claim) error {
		if c.ID() == ids[0] {
			attempts.Add(1)
			return errors.New("always fails")
		}
		return assign(ctx, c)
	}
	revoke := h.Revoke
	h.Revoke = func(ctx context.Context, c *assignment.Claim, why assignment.RevokeReason) {
		if c.ID() != ids[0] { // the recorder never saw it start
			revoke(ctx, c, why)
		}
	}
	w.join("m1", nil, h, coordinator.WithBalancer(bal))
	w.waitOwned(ids[1:], 10*time.Second, "m1")

	// Retries back off from 100ms: attempts 3 to 7 span about 6s.
	require.True(t, waitUntil(10*time.Second, func() bool { return attempts.Load() >= 3 }))
	before := calls.Load()
	require.True(t, waitUntil(20*time.Second, func() bool { return attempts.Load() >= 7 }))
	after := calls.Load()
	require.LessOrEqual(t, after-before, int32(1),
		"Balancer calls while one sync's OnAssign failed 4 more times, nothing else changing")
}
