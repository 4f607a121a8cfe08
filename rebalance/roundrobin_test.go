package rebalance

import (
	"fmt"
	"testing"

	"github.com/baton-go/baton/assignment"
)

func TestRoundRobinDealsInOrder(t *testing.T) {
	in := Input{Members: members(3), Syncs: syncs(7)}
	p := balance(t, RoundRobin(), in)
	for i, s := range in.Syncs {
		if want := fmt.Sprintf("m%03d", i%3); p[s.ID] != want {
			t.Fatalf("sync %s on %s, want %s", s.ID, p[s.ID], want)
		}
	}
	// Current plays no part.
	in.Current = assignment.Plan{"s00000": "m002"}
	if again := balance(t, RoundRobin(), in); again["s00000"] != "m000" {
		t.Fatalf("RoundRobin followed Current: %v", again)
	}
}

func TestRoundRobinWeightsDrainingConstraints(t *testing.T) {
	in := Input{
		Members: []assignment.Member{
			{ID: "a", Weight: 2},
			{ID: "b", Weight: 1},
			{ID: "c", Weight: 5, Draining: true},
			{ID: "d", Weight: 1, Labels: map[string]string{"gpu": "yes"}},
		},
		Syncs: syncs(40),
	}
	in.Syncs = append(in.Syncs, assignment.Sync{ID: "x-gpu", Labels: map[string]string{"require:gpu": "yes"}})
	p := balance(t, RoundRobin(), in)
	mustValid(t, in, p)
	c := counts(in, p)
	// 41 syncs over weights 2+1+1 = 4: about 20.5, 10.25, 10.25; the gpu
	// sync can only go to d.
	if c["a"] < 20 || c["a"] > 21 || c["b"] < 10 || c["b"] > 11 || c["c"] != 0 || p["x-gpu"] != "d" {
		t.Fatalf("counts %v, gpu sync on %s", c, p["x-gpu"])
	}
}
