package main

import (
	"bytes"
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/baton-go/baton/internal/transcript"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// table is one owner table: member -> the syncs it owns, the leader, and
// where it was printed: after events[0:at].
type table struct {
	owned  map[string][]string
	leader string
	at     int
}

var (
	eventLine   = regexp.MustCompile(`^\[\s*\d+\.\d+s\] (.*)$`)
	tableHeader = regexp.MustCompile(`^\s+member\s+syncs\s+owned$`)
	tableRow    = regexp.MustCompile(`^\s+(member-[a-z])( \(leader\))?\s+(\d+)\s*(.*)$`)
)

// parse splits run's output into its event lines, without their time
// stamps, and its tables. run writes each line and each table whole, so
// every line is an event, a table header or a row of the table above it.
func parse(t *testing.T, out string) ([]string, []table) {
	t.Helper()
	var events []string
	var tables []table
	inTable := false
	for _, line := range strings.Split(strings.TrimRight(out, "\n"), "\n") {
		if m := eventLine.FindStringSubmatch(line); m != nil {
			events = append(events, m[1])
			inTable = false
			continue
		}
		if tableHeader.MatchString(line) {
			tables = append(tables, table{owned: map[string][]string{}, at: len(events)})
			inTable = true
			continue
		}
		m := tableRow.FindStringSubmatch(line)
		require.NotNil(t, m, "a line that is neither an event nor a table row: %q", line)
		require.True(t, inTable, "a table row not under a table header: %q", line)
		tb := &tables[len(tables)-1]
		ids := strings.Fields(m[4])
		n, _ := strconv.Atoi(m[3])
		require.Len(t, ids, n, "row %q: its count and its syncs disagree", line)
		require.NotContains(t, tb.owned, m[1], "%s listed twice in one table", m[1])
		tb.owned[m[1]] = ids
		if m[2] != "" {
			require.Empty(t, tb.leader, "two leaders in one table")
			tb.leader = m[1]
		}
	}
	return events, tables
}

func (tb table) members() []string {
	ms := make([]string, 0, len(tb.owned))
	for m := range tb.owned {
		ms = append(ms, m)
	}
	slices.Sort(ms)
	return ms
}

func (tb table) syncs() []string {
	var all []string
	for _, ids := range tb.owned {
		all = append(all, ids...)
	}
	slices.Sort(all)
	return all
}

func syncIDs(from, to int, except ...int) []string {
	var ids []string
	for i := from; i <= to; i++ {
		if !slices.Contains(except, i) {
			ids = append(ids, fmt.Sprintf("sync-%02d", i))
		}
	}
	return ids
}

// TestRun runs the example end to end on an embedded etcd, so CI keeps the
// program working, and checks from its output that it shows what it says:
// twelve syncs spread over three members, a crashed member's syncs taken
// over after its lease expired, an added and a removed sync, and a
// graceful leave that hands everything to the last member.
func TestRun(t *testing.T) {
	// run makes every write under its own lock and returns only once its
	// members have stopped, so the buffer needs no lock of its own.
	var buf bytes.Buffer
	err := run("", &buf)
	out := buf.String()
	t.Log("\n" + out)
	require.NoError(t, err)

	events, tables := parse(t, out)
	require.Len(t, tables, 4, "a table after start, failover, add/remove and the leave")
	for k, tb := range tables {
		for m, ids := range tb.owned {
			require.NotEmpty(t, ids, "table %d: %s owns nothing, as under a plan made before it joined", k, m)
		}
	}
	// printedBetween checks that table k was printed after event i and
	// before event j: the main goroutine prints both.
	printedBetween := func(k, i, j int) {
		t.Helper()
		require.True(t, i < tables[k].at && tables[k].at <= j, "table %d printed after event %d, not between events %d and %d", k, tables[k].at-1, i, j)
	}

	// find: the main goroutine's events come in the order it says them.
	find := func(after int, re string) (int, []string) {
		t.Helper()
		return transcript.Find(t, events, after, re)
	}
	// has reports whether some event matches re, wherever it is: the
	// handlers' lines race with the main goroutine's.
	has := func(re string) bool {
		rx := regexp.MustCompile("^" + re + "$")
		return slices.ContainsFunc(events, rx.MatchString)
	}

	i, _ := find(-1, `embedded etcd at \S+`)
	i, _ = find(i, `group quickstart-[0-9a-f]{6}: 12 syncs stored`)
	for _, id := range []string{"member-a", "member-b", "member-c"} {
		i, _ = find(i, id+` joined`)
	}
	i, m := find(i, `all 12 syncs owned; leader is (member-[abc])`)
	leader := m[1]
	tableFollows := i // the event the next table is printed after
	for _, id := range syncIDs(1, 12) {
		require.True(t, has(`member-[abc]\s+starts\s+`+id+` \(token \d+\)`), "%s never started", id)
	}

	first := tables[0]
	require.Equal(t, []string{"member-a", "member-b", "member-c"}, first.members())
	require.Equal(t, syncIDs(1, 12), first.syncs(), "every sync owned once")
	require.Equal(t, leader, first.leader)

	i, m = find(i, `(member-[abc]) crashes: its etcd client is closed, no goodbye; its lease expires in 2s`)
	printedBetween(0, tableFollows, i)
	victim := m[1]
	require.NotEqual(t, leader, victim, "the demo crashes a member that does not lead")
	for _, id := range first.owned[victim] {
		require.True(t, has(victim+`\s+stops\s+`+id+` \(shutdown\)`), "the crashed member did not stop %s", id)
	}
	i, m = find(i, `failover done: every sync owned again (\d+\.\d+)s after the crash`)
	tableFollows = i
	failover, err := strconv.ParseFloat(m[1], 64)
	require.NoError(t, err)
	// Nothing can claim the crashed member's syncs before its lease
	// expires: at least the TTL less one keep-alive interval (TTL/3).
	require.GreaterOrEqual(t, failover, 1.0, "failover faster than the lease could expire")

	second := tables[1]
	survivors := slices.DeleteFunc([]string{"member-a", "member-b", "member-c"}, func(s string) bool { return s == victim })
	require.Equal(t, survivors, second.members(), "the crashed member is gone")
	require.Equal(t, syncIDs(1, 12), second.syncs(), "every sync owned again, once")
	require.Equal(t, leader, second.leader)
	for _, id := range first.owned[victim] {
		require.True(t, has(`member-[abc]\s+starts\s+`+id+` \(token \d+\)`), "%s never started again", id)
	}

	i, _ = find(i, `admin adds sync-13`)
	printedBetween(1, tableFollows, i)
	require.True(t, has(`member-[abc]\s+starts\s+sync-13 \(token \d+\)`), "sync-13 never started")
	i, _ = find(i, `admin removes sync-05`)
	tableFollows = i
	require.True(t, has(`member-[abc]\s+stops\s+sync-05 \(removed\)`), "sync-05 never stopped")
	third := tables[2]
	require.Equal(t, survivors, third.members())
	require.Equal(t, syncIDs(1, 13, 5), third.syncs())

	i, m = find(i, `(member-[abc]) leaves gracefully \(drain, then hand over\)`)
	printedBetween(2, tableFollows, i)
	leaver := m[1]
	require.Contains(t, survivors, leaver)
	require.NotEqual(t, leader, leaver)
	for _, id := range third.owned[leaver] {
		require.True(t, has(leaver+`\s+stops\s+`+id+` \(draining\)`), "the leaver did not hand over %s", id)
		require.True(t, has(leader+`\s+starts\s+`+id+` \(token \d+\)`), "the leader did not take over %s", id)
	}
	i, _ = find(i, leaver+` left in \d+\.\d+s`)
	tableFollows = i
	last := tables[3]
	require.Equal(t, []string{leader}, last.members())
	require.Equal(t, leader, last.leader)
	require.Equal(t, syncIDs(1, 13, 5), last.syncs(), "the last member owns every sync")

	i, _ = find(i, leader+` left`)
	printedBetween(3, tableFollows, i)
	find(i, `done`)
}
