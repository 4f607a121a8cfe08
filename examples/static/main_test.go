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
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, etcdtest.LeakOptions()...)
}

var eventLine = regexp.MustCompile(`^\[\s*\d+\.\d+s\] (.*)$`)

// events returns the lines of out without their time stamps.
func events(t *testing.T, out string) []string {
	t.Helper()
	var evs []string
	for _, line := range strings.Split(strings.TrimRight(out, "\n"), "\n") {
		m := eventLine.FindStringSubmatch(line)
		require.NotNil(t, m, "a line without a time stamp: %q", line)
		evs = append(evs, m[1])
	}
	return evs
}

// find returns the index and submatches of the first event after index
// after that matches re in full.
func find(t *testing.T, evs []string, after int, re string) (int, []string) {
	t.Helper()
	rx := regexp.MustCompile("^" + re + "$")
	for i := after + 1; i < len(evs); i++ {
		if m := rx.FindStringSubmatch(evs[i]); m != nil {
			return i, m
		}
	}
	t.Fatalf("no line %q after line %d", re, after)
	return 0, nil
}

// restartLines checks the lines of one restart, from index after on, and
// that they agree with r; it returns the index of its last line and the
// IDs of the members before the restart.
func restartLines(t *testing.T, evs []string, after int, r Result, idRE string) (int, []string) {
	t.Helper()
	i, m := find(t, evs, after, `9 syncs on \[(.+)\]; (`+idRE+`) runs \[(.*)\]`)
	ids := strings.Fields(m[1])
	require.Len(t, ids, 3)
	for _, id := range ids {
		require.Regexp(t, "^"+idRE+"$", id)
	}
	require.Equal(t, r.Restarted, m[2])
	require.Contains(t, ids, r.Restarted)
	require.Len(t, strings.Fields(m[3]), r.Had, "the syncs listed are those it had")
	q := regexp.QuoteMeta
	i, _ = find(t, evs, i, q(r.Restarted)+` restarts: killed without Leave, started again at once`)
	i, _ = find(t, evs, i, q(r.Rejoined)+` joined after \d+\.\d+s`)
	i, _ = find(t, evs, i, `all 9 syncs running again \d+\.\d+s after the kill`)
	i, m = find(t, evs, i, q(r.Restarted)+` restarted as `+q(r.Rejoined)+`: it owns (\d+) of its (\d+) syncs again; (\d+) syncs moved on the members that did not restart`)
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
	evs := events(t, out.String())
	i, _ := find(t, evs, -1, `embedded etcd at \S+`)
	i, _ = find(t, evs, i, `--- stable IDs \(web-0, web-1, web-2\)`)
	i, ids := restartLines(t, evs, i, stable, `web-\d`)
	require.Equal(t, []string{"web-0", "web-1", "web-2"}, ids)
	i, _ = find(t, evs, i, `--- random IDs \(the default\)`)
	i, ids = restartLines(t, evs, i, random, `pod-[0-9a-f]{6}`)
	require.False(t, slices.Contains(ids, random.Rejoined), "the restarted member came back as a new member, not as %s", random.Rejoined)
	find(t, evs, i, `stable IDs: a restart within the TTL pauses only the restarted member's syncs; nothing else moves`)
	require.Len(t, evs, i+2, "the conclusion is the last line")
}
