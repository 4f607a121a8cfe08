package main

import (
	"bytes"
	"maps"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// placement is one block of show: its title and sync -> owner.
type placement struct {
	title  string
	owners map[string]string
}

var placementRow = regexp.MustCompile(`^  (\S+)\s+on (\S+)$`)

func parsePlacements(t *testing.T, out string) []placement {
	t.Helper()
	var ps []placement
	for _, line := range strings.Split(strings.TrimRight(out, "\n"), "\n") {
		if title, ok := strings.CutSuffix(line, ":"); ok && !strings.HasPrefix(line, " ") {
			ps = append(ps, placement{title: title, owners: map[string]string{}})
			continue
		}
		m := placementRow.FindStringSubmatch(line)
		require.NotNil(t, m, "unexpected line %q", line)
		require.NotEmpty(t, ps, "a placement row before any title: %q", line)
		p := ps[len(ps)-1]
		require.NotContains(t, p.owners, m[1], "%s listed twice", m[1])
		p.owners[m[1]] = m[2]
	}
	return ps
}

// TestRun runs the example end to end on an embedded etcd, so CI keeps the
// program working, and checks from its output that the pin holds while
// its member is live and yields once it leaves.
func TestRun(t *testing.T) {
	var buf bytes.Buffer
	err := run("", &buf)
	out := buf.String()
	t.Log("\n" + out)
	require.NoError(t, err)

	ps := parsePlacements(t, out)
	require.Len(t, ps, 2)
	all := []string{"nightly-report", "sync-1", "sync-2", "sync-3", "sync-4", "sync-5", "sync-6"}
	for _, p := range ps {
		ids := make([]string, 0, len(p.owners))
		for id := range p.owners {
			ids = append(ids, id)
		}
		slices.Sort(ids)
		require.Equal(t, all, ids, "%s: every sync placed once", p.title)
	}
	// runsOn returns the members p places syncs on: every live member,
	// once the plan is not one made before the last join.
	runsOn := func(p placement) []string {
		ms := slices.Sorted(maps.Values(p.owners))
		return slices.Compact(ms)
	}

	three := ps[0]
	require.Equal(t, "3 members", three.title)
	for id, owner := range three.owners {
		require.Contains(t, []string{"member-a", "member-b", "member-c"}, owner, "%s", id)
	}
	require.Equal(t, "member-b", three.owners["nightly-report"], "the pin holds while member-b is live")
	require.Equal(t, []string{"member-a", "member-b", "member-c"}, runsOn(three), "every member runs syncs")

	left := ps[1]
	require.Equal(t, "member-b left", left.title)
	for id, owner := range left.owners {
		require.Contains(t, []string{"member-a", "member-c"}, owner, "%s still on the member that left", id)
	}
	require.Equal(t, []string{"member-a", "member-c"}, runsOn(left), "both members left run syncs")
}
