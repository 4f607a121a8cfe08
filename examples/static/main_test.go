package main

import (
	"regexp"
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

// restartLines checks the lines of one restart, from index after on, and
// that they agree with r; it returns the index of its last line and the
// IDs of the members before the restart.
func restartLines(t *testing.T, evs []string, after int, r Result, idRE string) (int, []string) {
	t.Helper()
	i, m := transcript.Find(t, evs, after, `9 syncs on \[(.+)\]; (`+idRE+`) runs \[(.*)\]`)
	ids := strings.Fields(m[1])
	require.Len(t, ids, 3)
	for _, id := range ids {
		require.Regexp(t, "^"+idRE+"$", id)
	}
	require.Equal(t, r.Restarted, m[2])
	require.Contains(t, ids, r.Restarted)
	require.Len(t, strings.Fields(m[3]), r.Had, "the syncs listed are those it had")
	q := regexp.QuoteMeta
	i, _ = transcript.Find(t, evs, i, q(r.Restarted)+` restarts: killed without Leave, started again at once`)
	i, _ = transcript.Find(t, evs, i, q(r.Rejoined)+` joined after \d+\.\d+s`)
	i, _ = transcript.Find(t, evs, i, `all 9 syncs running again \d+\.\d+s after the kill`)
	i, m = transcript.Find(t, evs, i, q(r.Restarted)+` restarted as `+q(r.Rejoined)+`: it owns (\d+) of its (\d+) syncs again; (\d+) syncs moved on the members that did not restart`)
	for k, want := range []int{r.BackHome, r.Had, r.OthersMoved} {
		got, err := strconv.Atoi(m[k+1])
		require.NoError(t, err)
		require.Equal(t, want, got, "line %q", evs[i])
	}
	return i, ids
}

// TestStatic runs the example as `go run ./examples/static` does, and
// checks both what it measured and that its output tells that story: with
// stable IDs the restarted member comes back under its own ID to its own
// syncs and nothing else moves; with random IDs it comes back as a new
// member.
func TestStatic(t *testing.T) {
	var out strings.Builder
	res, err := demo("", &out)
	t.Log("\n" + out.String())
	require.NoError(t, err)
	stable, random := res[0], res[1]
	if stable.Rejoined != stable.Restarted {
		t.Errorf("stable ID changed: %s -> %s", stable.Restarted, stable.Rejoined)
	}
	if stable.OthersMoved != 0 {
		t.Errorf("a restart with a stable ID moved %d syncs on other members", stable.OthersMoved)
	}
	if stable.Had == 0 || stable.BackHome != stable.Had {
		t.Errorf("the restarted member owns %d of its %d syncs again", stable.BackHome, stable.Had)
	}
	if random.Rejoined == random.Restarted {
		t.Errorf("a random ID came back the same: %s", random.Rejoined)
	}

	// Every line comes from the demo's goroutine, so their order is fixed.
	evs := transcript.Events(t, out.String())
	i, _ := transcript.Find(t, evs, -1, `embedded etcd at \S+`)
	i, _ = transcript.Find(t, evs, i, `--- stable IDs \(web-0, web-1, web-2\)`)
	i, ids := restartLines(t, evs, i, stable, `web-\d`)
	require.Equal(t, []string{"web-0", "web-1", "web-2"}, ids)
	i, _ = transcript.Find(t, evs, i, `--- random IDs \(the default\)`)
	i, ids = restartLines(t, evs, i, random, `pod-[0-9a-f]{6}`)
	require.False(t, slices.Contains(ids, random.Rejoined), "the restarted member came back as a new member, not as %s", random.Rejoined)
	transcript.Find(t, evs, i, `stable IDs: a restart within the TTL pauses only the restarted member's syncs; nothing else moves`)
	require.Len(t, evs, i+2, "the conclusion is the last line")
}
