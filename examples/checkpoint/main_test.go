package main

import (
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/baton-go/baton/internal/etcdtest"
	"github.com/baton-go/baton/internal/transcript"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, etcdtest.LeakOptions()...)
}

// TestCheckpoint runs the example as `go run ./examples/checkpoint` does,
// and checks from its output that the sync failed over from alpha to beta
// with a newer token, that beta resumed at alpha's last checkpoint (at or
// past the row alpha crashed at, so nothing was skipped), that both of the
// zombie's writes were refused, and that every row arrived.
func TestCheckpoint(t *testing.T) {
	var out strings.Builder
	err := run("", &out)
	t.Log("\n" + out.String())
	require.NoError(t, err)

	evs := transcript.Events(t, out.String())
	i, _ := transcript.Find(t, evs, -1, `embedded etcd at \S+`)
	i, _ = transcript.Find(t, evs, i, `group checkpoint-[0-9a-f]{6}: sync orders-copy copies 200 rows in batches of 10, checkpointing after each`)
	i, m := transcript.Find(t, evs, i, `alpha owns orders-copy \(token (\d+)\), resumes at row 0`)
	alphaToken := m[1]
	i, _ = transcript.Find(t, evs, i, `beta joined as a standby \(one sync: it stays where it runs\)`)
	i, m = transcript.Find(t, evs, i, `alpha crashes at row (\d+) \(its lease expires within 2s\)`)
	crashedAt := transcript.Atoi(t, m[1])
	require.GreaterOrEqual(t, crashedAt, 80, "the demo lets alpha copy 80 rows first")

	// beta's line and the demo's next ones are ordered: the demo waits
	// until beta has said it owns the sync.
	i, m = transcript.Find(t, evs, i, `beta  owns orders-copy \(token (\d+)\), resumes at row (\d+)`)
	betaToken, resumed := m[1], transcript.Atoi(t, m[2])
	require.Greater(t, transcript.Atoi(t, betaToken), transcript.Atoi(t, alphaToken), "the new owner's fencing token is newer")
	require.GreaterOrEqual(t, resumed, crashedAt, "beta resumed at or past the row alpha had checkpointed")
	require.Zero(t, resumed%10, "a checkpoint is a batch boundary")
	i, _ = transcript.Find(t, evs, i, `failover took \d+\.\d+s; beta resumed at row `+strconv.Itoa(resumed)+`, alpha's last checkpoint: nothing skipped`)

	i, _ = transcript.Find(t, evs, i, `zombie alpha saves a checkpoint: .+ \(ErrNotOwner: true\)`)
	i, _ = transcript.Find(t, evs, i, `zombie alpha writes rows with token `+alphaToken+` < `+betaToken+`: destination: write with a stale fencing token refused`)
	i, m = transcript.Find(t, evs, i, `destination: 200 of 200 rows, (\d+) rows copied twice \(at most one batch: true\), 1 stale write refused`)
	require.LessOrEqual(t, transcript.Atoi(t, m[1]), 10)
	transcript.Find(t, evs, i, `beta left; done`)
	require.Equal(t, "beta left; done", evs[len(evs)-1])

	// beta's last line races with the demo's, which polls beta's position.
	require.True(t, slices.Contains(evs, "beta  finished orders-copy: all 200 rows copied"))
	require.False(t, slices.ContainsFunc(evs, func(e string) bool { return strings.HasPrefix(e, "alpha finished") }),
		"alpha crashed before it could finish")
}
