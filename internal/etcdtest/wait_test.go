package etcdtest_test

import (
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/baton-go/baton/internal/etcdtest"
)

func TestWaitUntilReturnsTrueOnceCondHolds(t *testing.T) {
	var calls atomic.Int32
	start := time.Now()
	ok := etcdtest.WaitUntil(10*time.Second, func() bool { return calls.Add(1) >= 3 })
	require.True(t, ok)
	require.EqualValues(t, 3, calls.Load(), "cond is not called again after it returned true")
	require.Less(t, time.Since(start), 5*time.Second, "WaitUntil returned as soon as cond held, not at the timeout")
}

func TestWaitUntilReturnsFalseAfterTimeout(t *testing.T) {
	var calls atomic.Int32
	start := time.Now()
	ok := etcdtest.WaitUntil(50*time.Millisecond, func() bool { calls.Add(1); return false })
	require.False(t, ok)
	require.GreaterOrEqual(t, time.Since(start), 50*time.Millisecond)
	// Called at least at the start and once more after the deadline.
	require.GreaterOrEqual(t, calls.Load(), int32(2))
}

func TestWaitUntilCallsCondOnceMoreAfterTheTimeout(t *testing.T) {
	// With no time left after the first call, only the call after the
	// timeout can see the condition hold.
	var calls atomic.Int32
	ok := etcdtest.WaitUntil(0, func() bool { return calls.Add(1) == 2 })
	require.True(t, ok)
	require.EqualValues(t, 2, calls.Load())
}
