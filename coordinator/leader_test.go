package coordinator

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/baton-go/baton/internal/etcdtest"
)

// waitsRecorder collects the leader loop's waits (testHookLeaderWait).
type waitsRecorder struct {
	mu    sync.Mutex
	waits []time.Duration
}

func (r *waitsRecorder) record(d time.Duration) {
	r.mu.Lock()
	r.waits = append(r.waits, d)
	r.mu.Unlock()
}

func (r *waitsRecorder) snapshot() []time.Duration {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]time.Duration(nil), r.waits...)
}

// failFirst returns a hook that fails its first n calls, and a func that
// tells how many calls it has seen.
func failFirst(n int) (func() error, func() int) {
	var mu sync.Mutex
	calls := 0
	hook := func() error {
		mu.Lock()
		defer mu.Unlock()
		calls++
		if calls <= n {
			return errors.New("injected by the test")
		}
		return nil
	}
	return hook, func() int { mu.Lock(); defer mu.Unlock(); return calls }
}

// startLeader joins a lone member of a fresh group (so it leads) and
// leaves it at cleanup; hooks must be set before, and are cleared after
// it stopped.
func startLeader(t *testing.T, opts ...Option) *Coordinator {
	t.Helper()
	cl := etcdtest.NewCluster(t, 1)
	cli := cl.Client(t)
	base := []Option{WithMemberID("m1"), WithTTL(time.Second), WithSettle(50 * time.Millisecond)}
	c, err := New(cli, "leaderloop", HandlerFuncs{}, append(base, opts...)...)
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	require.NoError(t, c.Join(ctx))
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = c.Leave(ctx)
		testHookLeaderLoad, testHookLeaderFollow, testHookLeaderWait = nil, nil, nil
	})
	return c
}

// requireBackoff checks that the first n waits grow (exponential backoff),
// not a constant or no wait at all.
func requireBackoff(t *testing.T, waits []time.Duration, n int) {
	t.Helper()
	require.GreaterOrEqual(t, len(waits), n, "waits before reloading: %v", waits)
	for i := 1; i < n; i++ {
		require.Greater(t, waits[i], waits[i-1], "waits before reloading do not grow: %v", waits)
	}
}

// TestLeaderLoadRetriesBackOff: a load that keeps failing is retried with
// growing waits, and the leader leads once it succeeds.
func TestLeaderLoadRetriesBackOff(t *testing.T) {
	var rec waitsRecorder
	hook, calls := failFirst(6)
	testHookLeaderLoad, testHookLeaderWait = hook, rec.record
	c := startLeader(t)
	require.Eventually(t, func() bool { return calls() > 6 }, 20*time.Second, 10*time.Millisecond, "load never retried past the failures")
	requireBackoff(t, rec.snapshot(), 6)
	require.True(t, c.IsLeader())
}

// TestLeaderWatchBreakBacksOff: watches that break at once do not make the
// leader reload in a tight loop; the wait grows until a follow makes
// progress.
func TestLeaderWatchBreakBacksOff(t *testing.T) {
	var rec waitsRecorder
	hook, calls := failFirst(6)
	testHookLeaderFollow, testHookLeaderWait = hook, rec.record
	startLeader(t)
	require.Eventually(t, func() bool { return calls() > 6 }, 20*time.Second, 10*time.Millisecond, "follow never started past the failures")
	requireBackoff(t, rec.snapshot(), 6)
}
