package rebalance

import (
	"context"
	"errors"
	"maps"
	"testing"

	"github.com/baton-go/baton/assignment"
)

func TestThrottleSticky(t *testing.T) {
	in := Input{Members: members(4), Syncs: syncs(100)}
	in.Current = balance(t, Sticky(), in)
	in.Members = append(in.Members, assignment.Member{ID: "new"})
	target := balance(t, Sticky(), in)

	rounds := 0
	for ; ; rounds++ {
		next := balance(t, Throttle(Sticky(), 3), in)
		mustValid(t, in, next)
		if n := len(moved(in, in.Current, next)); n > 3 {
			t.Fatalf("round %d moved %d syncs", rounds, n)
		}
		if maps.Equal(next, in.Current) {
			break
		}
		in.Current = next
	}
	if !maps.Equal(in.Current, target) {
		t.Fatalf("throttled rounds ended on another plan than Sticky's: %v", moved(in, in.Current, target))
	}
	if rounds != 7 { // the joiner takes 20 syncs, 3 per round
		t.Fatalf("took %d rounds, want 7", rounds)
	}
}

func TestThrottleNeverHoldsBackUnownedSyncs(t *testing.T) {
	in := Input{Members: members(3), Syncs: syncs(30), Current: assignment.Plan{"s00000": "m000"}}
	for _, b := range []Balancer{Throttle(Sticky(), 1), Throttle(RoundRobin(), 1)} {
		p := balance(t, b, in)
		mustValid(t, in, p) // all 29 unowned syncs are placed at once
	}
}

func TestThrottleGenericTakesChangesInIDOrder(t *testing.T) {
	in := Input{Members: members(2), Syncs: syncs(6)}
	in.Current = assignment.Plan{}
	for _, s := range in.Syncs {
		in.Current[s.ID] = "m001" // RoundRobin wants s0, s2, s4 on m000
	}
	p := balance(t, Throttle(RoundRobin(), 2), in)
	want := assignment.Plan{"s00000": "m000", "s00001": "m001", "s00002": "m000", "s00003": "m001", "s00004": "m001", "s00005": "m001"}
	if !maps.Equal(p, want) {
		t.Fatalf("got %v, want %v", p, want)
	}
	// maxMoves below 1 counts as 1.
	for _, limit := range []int{0, -5} {
		p = balance(t, Throttle(RoundRobin(), limit), in)
		if n := len(moved(in, in.Current, p)); n != 1 {
			t.Fatalf("maxMoves %d: %d moves, want 1", limit, n)
		}
	}
}

func TestThrottlePassesErrorsOn(t *testing.T) {
	boom := errors.New("boom")
	b := Throttle(BalancerFunc(func(context.Context, Input) (assignment.Plan, error) { return nil, boom }), 1)
	if _, err := b.Balance(context.Background(), Input{}); !errors.Is(err, boom) {
		t.Fatalf("got %v", err)
	}
}
