// Package transcript reads what the examples print, for their tests: lines
// stamped with the time since the example started ("[  1.234s] text"),
// found in order.
package transcript

import (
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

var eventLine = regexp.MustCompile(`^\[\s*\d+\.\d+s\] (.*)$`)

// Events returns the lines of out without their time stamps; a line
// without one fails t.
func Events(t testing.TB, out string) []string {
	t.Helper()
	var evs []string
	for _, line := range strings.Split(strings.TrimRight(out, "\n"), "\n") {
		m := eventLine.FindStringSubmatch(line)
		require.NotNil(t, m, "a line without a time stamp: %q", line)
		evs = append(evs, m[1])
	}
	return evs
}

// Find returns the index and submatches of the first event after index
// after that matches re in full; none fails t.
func Find(t testing.TB, evs []string, after int, re string) (int, []string) {
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

// Count returns how many events match re in full.
func Count(evs []string, re string) int {
	rx := regexp.MustCompile("^" + re + "$")
	n := 0
	for _, ev := range evs {
		if rx.MatchString(ev) {
			n++
		}
	}
	return n
}

// Atoi is strconv.Atoi for a number the test's regexp matched; an error
// fails t.
func Atoi(t testing.TB, s string) int {
	t.Helper()
	n, err := strconv.Atoi(s)
	require.NoError(t, err)
	return n
}
