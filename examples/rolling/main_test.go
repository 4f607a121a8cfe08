package main

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/baton-go/baton/internal/etcdtest"
	"github.com/baton-go/baton/internal/transcript"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, etcdtest.LeakOptions()...)
}

// TestRolling runs the example as `go run ./examples/rolling` does, and
// checks both what it measured and that its output tells that story: each
// member drained, left, came back in turn, the summary line gives the
// numbers measured, and the kill without a drain interrupted the syncs
// the killed member ran.
func TestRolling(t *testing.T) {
	var out strings.Builder
	sum, err := demo("", &out)
	t.Log("\n" + out.String())
	require.NoError(t, err)
	if sum.Restarts != 3 || len(sum.Interrupted) != 0 || sum.TwiceRunning != 0 {
		t.Errorf("rolling restart: %+v", sum)
	}
	if sum.Handoffs == 0 || sum.MaxGap > time.Second {
		t.Errorf("handoffs %d, longest gap %v: want quick handoffs", sum.Handoffs, sum.MaxGap)
	}
	if sum.KillInterrupted == 0 || sum.KillFailoverTime < time.Second {
		t.Errorf("the kill without drain interrupted %d syncs for %v", sum.KillInterrupted, sum.KillFailoverTime)
	}

	// Every line comes from the demo's goroutine or from a member's serve
	// while the demo waits for it, so their order is fixed.
	evs := transcript.Events(t, out.String())
	i, _ := transcript.Find(t, evs, -1, `embedded etcd at \S+`)
	i, _ = transcript.Find(t, evs, i, `group rolling-[0-9a-f]{6}: 12 syncs, each working in 20ms batches`)
	i, _ = transcript.Find(t, evs, i, `all 12 syncs running on \[web-0 web-1 web-2\]`)
	for _, id := range []string{"web-0", "web-1", "web-2"} {
		i, _ = transcript.Find(t, evs, i, id+` got terminated: draining, then leaving`)
		i, _ = transcript.Find(t, evs, i, id+` left after \d+ms`)
		i, _ = transcript.Find(t, evs, i, id+` is down; its syncs run on the other two`)
		i, _ = transcript.Find(t, evs, i, id+` is back \(new version\); the group rebalanced onto it`)
	}
	i, m := transcript.Find(t, evs, i, `rolling restart of 3 members: (\d+) handoffs, longest gap (\d+)ms, 0 interrupted syncs, 0 syncs ever run twice at once`)
	require.Equal(t, sum.Handoffs, transcript.Atoi(t, m[1]))
	require.Equal(t, fmt.Sprintf("%.0f", float64(sum.MaxGap.Microseconds())/1000), m[2])

	i, m = transcript.Find(t, evs, i, `for comparison, web-1 is killed without draining while it runs (\d+) syncs`)
	ran := transcript.Atoi(t, m[1])
	require.Positive(t, ran)
	kill, m := transcript.Find(t, evs, i, `(\d+) syncs interrupted for (\d+\.\d+)s \(the lease TTL is 2s\): drain before you stop`)
	require.Equal(t, ran, transcript.Atoi(t, m[1]), "every sync the killed member ran was interrupted, and only those")
	require.Equal(t, sum.KillInterrupted, ran)
	require.Equal(t, fmt.Sprintf("%.2f", sum.KillFailoverTime.Seconds()), m[2])

	// The two members left stop gracefully, in map order.
	last := kill
	for _, id := range []string{"web-0", "web-2"} {
		j, _ := transcript.Find(t, evs, kill, id+` got terminated: draining, then leaving`)
		j, _ = transcript.Find(t, evs, j, id+` left after \d+ms`)
		last = max(last, j)
	}
	require.Equal(t, 1, transcript.Count(evs, `web-1 got terminated: .*`), "web-1 stops gracefully once, in the rolling restart; then it is killed")
	require.Equal(t, 5, transcript.Count(evs, `web-\d got terminated: draining, then leaving`))
	require.Equal(t, 5, transcript.Count(evs, `web-\d left after \d+ms`))
	transcript.Find(t, evs, last, `done`)
	require.Equal(t, "done", evs[len(evs)-1])
}
