package coordinator

import (
	"log/slog"
	"testing"
	"time"

	"github.com/baton-go/baton/assignment"
)

// TestHandoffWait: when the owner of a sync leaving for a Preparer lets go.
func TestHandoffWait(t *testing.T) {
	const timeout = time.Minute
	for _, tc := range []struct {
		name    string
		to      string // announced
		gen     int64
		ready   *handoffReady
		reason  assignment.RevokeReason
		leaving bool
		left    time.Duration // since the move was seen
		waits   bool
	}{
		{name: "nothing announced", reason: assignment.Rebalanced},
		{name: "announced, nobody ready", to: "b", gen: 5, reason: assignment.Rebalanced, waits: true},
		{name: "the member announced is ready", to: "b", gen: 5, ready: &handoffReady{"b", 5}, reason: assignment.Rebalanced},
		{name: "draining too", to: "b", gen: 5, ready: &handoffReady{"b", 5}, reason: assignment.Draining},
		{name: "a signal of an earlier move", to: "b", gen: 5, ready: &handoffReady{"b", 4}, reason: assignment.Rebalanced, waits: true},
		{name: "another member, same plan", to: "b", gen: 5, ready: &handoffReady{"c", 5}, reason: assignment.Rebalanced, waits: true},
		{name: "the member of a later plan is ready", to: "b", gen: 5, ready: &handoffReady{"c", 6}, reason: assignment.Rebalanced},
		{name: "timeout passed", to: "b", gen: 5, reason: assignment.Rebalanced, left: timeout},
		{name: "leaving", to: "b", gen: 5, reason: assignment.Rebalanced, leaving: true},
		{name: "sync removed", to: "b", gen: 5, reason: assignment.Removed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := &worker{
				c:       &Coordinator{o: options{prepare: timeout}, log: slog.New(slog.DiscardHandler)},
				readies: map[string]handoffReady{},
				leaving: tc.leaving,
			}
			a := &actor{id: "s", handoffTo: tc.to, handoffGen: tc.gen, leftAt: time.Now().Add(-tc.left)}
			if tc.ready != nil {
				w.readies["s"] = *tc.ready
			}
			d := w.handoffWait(a, tc.reason)
			if got := d > 0; got != tc.waits {
				t.Fatalf("handoffWait = %v, want waiting %v", d, tc.waits)
			}
			if tc.waits && d > timeout {
				t.Fatalf("waits %v, beyond the timeout %v", d, timeout)
			}
		})
	}
}
