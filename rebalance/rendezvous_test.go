package rebalance

import (
	"math"
	"testing"

	"github.com/baton-go/baton/assignment"
)

func TestRendezvousMovesLittle(t *testing.T) {
	in := Input{Members: members(10), Syncs: syncs(5000)}
	before := balance(t, Rendezvous(), in)
	mustValid(t, in, before)
	for m, c := range counts(in, before) {
		if c > int(math.Ceil(loadBound*500)) {
			t.Fatalf("member %s has %d syncs, over the cap of %v", m, c, loadBound*500)
		}
	}

	// A joiner takes about N/(n+1) = 454; few other syncs move (those the
	// cap had pushed past their first choice).
	joined := Input{Members: append(members(10), assignment.Member{ID: "new"}), Syncs: in.Syncs}
	after := balance(t, Rendezvous(), joined)
	mv := moved(joined, before, after)
	took := counts(joined, after)["new"]
	if took < 350 || took > 560 || len(mv) > 2*took {
		t.Fatalf("joiner took %d, %d moved in all", took, len(mv))
	}

	// A leaver's syncs go elsewhere; most others stay.
	left := Input{Members: members(10)[1:], Syncs: in.Syncs}
	after = balance(t, Rendezvous(), left)
	mustValid(t, left, after)
	others := 0
	for _, id := range moved(left, before, after) {
		if before[id] != "m000" {
			others++
		}
	}
	if others > 250 {
		t.Fatalf("%d syncs of staying members moved when one left", others)
	}
}

func TestRendezvousWeightsAndConstraints(t *testing.T) {
	in := Input{
		Members: []assignment.Member{
			{ID: "big", Weight: 3},
			{ID: "small", Weight: 1},
			{ID: "drain", Weight: 1, Draining: true},
			{ID: "eu", Weight: 1, Labels: map[string]string{"region": "eu"}},
		},
		Syncs: syncs(3000),
	}
	in.Syncs = append(in.Syncs, assignment.Sync{ID: "x", Labels: map[string]string{"require:region": "eu"}})
	p := balance(t, Rendezvous(), in)
	mustValid(t, in, p)
	c := counts(in, p)
	if c["drain"] != 0 || p["x"] != "eu" || c["big"] < 2*c["small"] {
		t.Fatalf("counts %v, x on %s", c, p["x"])
	}
}
