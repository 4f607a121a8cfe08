package coordinator_test

import (
	"context"
	"log/slog"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/baton-go/baton/assignment"
	"github.com/baton-go/baton/coordinator"
	"github.com/baton-go/baton/internal/etcdtest"
	"github.com/baton-go/baton/rebalance"
)

// TestThrottledRolloutSurvivesASpecPutMidMove: a round run while a move is
// in flight (here for a spec Put) writes nothing; the rollout must go on
// once the move lands.
func TestThrottledRolloutSurvivesASpecPutMidMove(t *testing.T) {
	w := newWorld(t, nil)
	ids := syncIDs(6)
	w.putSyncs(ids...)
	bal := coordinator.WithBalancer(rebalance.Throttle(rebalance.Sticky(), 1))
	unchanged := &logWatch{text: "nothing to write", seen: make(chan struct{}, 1)}
	revoking := make(chan struct{}, 1)
	proceed := make(chan struct{})
	var first atomic.Bool
	h := w.handler("m1")
	rec := h.Revoke
	h.Revoke = func(ctx context.Context, c *assignment.Claim, why assignment.RevokeReason) {
		if first.CompareAndSwap(false, true) {
			revoking <- struct{}{}
			<-proceed
		}
		rec(ctx, c, why)
	}
	m1 := w.join("m1", nil, h, bal, coordinator.WithLogger(slog.New(unchanged)))
	require.True(t, etcdtest.WaitUntil(5*time.Second, m1.co.IsLeader))
	w.waitOwned(ids, 5*time.Second, "m1")

	w.join("m2", nil, nil, bal)
	select {
	case <-revoking:
	case <-time.After(10 * time.Second):
		t.Fatal("no move started")
	}
	// Drain the signal of any earlier no-op round, then change a spec
	// while the move is in flight and wait for the round it causes.
	select {
	case <-unchanged.seen:
	default:
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	require.NoError(t, w.store.Put(ctx, assignment.Sync{ID: ids[5], Spec: []byte(`{"v":2}`)}))
	select {
	case <-unchanged.seen:
	case <-time.After(10 * time.Second):
		t.Fatal("the spec Put caused no round")
	}
	close(proceed)
	var l map[string]int
	require.True(t, etcdtest.WaitUntil(10*time.Second, func() bool {
		l = loads(w.owners())
		return l["m1"] == 3 && l["m2"] == 3
	}), "rollout stopped at %v", l)
}
