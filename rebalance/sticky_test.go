package rebalance

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"math/big"
	"slices"
	"testing"

	"pgregory.net/rapid"

	"github.com/baton-go/baton/assignment"
)

func TestStickyEqualSplit(t *testing.T) {
	in := Input{Members: members(3), Syncs: syncs(10)}
	p := balance(t, Sticky(), in)
	mustValid(t, in, p)
	got := slices.Sorted(maps.Values(counts(in, p)))
	if !slices.Equal(got, []int{3, 3, 4}) {
		t.Fatalf("counts %v, want 3, 3, 4", got)
	}
}

func TestStickyJoinAndLeave(t *testing.T) {
	in := Input{Members: members(10), Syncs: syncs(1000)}
	in.Current = balance(t, Sticky(), in)

	// Join: the 11th member takes 90 or 91 and nothing else moves.
	joined := in
	joined.Members = append(members(10), assignment.Member{ID: "new", Weight: 1})
	p := balance(t, Sticky(), joined)
	mustValid(t, joined, p)
	took := counts(joined, p)["new"]
	if took != 90 && took != 91 {
		t.Fatalf("joiner took %d syncs, want 90 or 91", took)
	}
	if n := len(moved(joined, in.Current, p)); n != took {
		t.Fatalf("%d syncs moved, want only the joiner's %d", n, took)
	}

	// Leave: only the leaver's syncs move, and the rest stay balanced.
	left := Input{Members: members(10)[1:], Syncs: in.Syncs, Current: in.Current}
	p = balance(t, Sticky(), left)
	mustValid(t, left, p)
	for _, id := range moved(left, in.Current, p) {
		if in.Current[id] != "m000" {
			t.Fatalf("sync %s of %s moved", id, in.Current[id])
		}
	}
	for m, c := range counts(left, p) {
		if c != 111 && c != 112 {
			t.Fatalf("member %s has %d syncs, want 111 or 112", m, c)
		}
	}
}

func TestStickyWeights(t *testing.T) {
	in := Input{Members: members(3), Syncs: syncs(600)}
	for i := range in.Members {
		in.Members[i].Weight = i + 1
	}
	p := balance(t, Sticky(), in)
	got := counts(in, p)
	if got["m000"] != 100 || got["m001"] != 200 || got["m002"] != 300 {
		t.Fatalf("counts %v, want 100/200/300", got)
	}

	// Doubling m000's weight moves 100 syncs to it, each from a member
	// that only loses.
	in.Current = p
	in.Members = slices.Clone(in.Members)
	in.Members[0].Weight = 2
	next := balance(t, Sticky(), in)
	got = counts(in, next)
	if got["m000"] != 171 && got["m000"] != 172 {
		t.Fatalf("m000 has %d syncs after doubling its weight, want 600×2/7 ≈ 171.4", got["m000"])
	}
	for _, id := range moved(in, p, next) {
		if next[id] != "m000" {
			t.Fatalf("sync %s moved from %s to %s", id, p[id], next[id])
		}
	}
}

func TestStickyHeavySyncs(t *testing.T) {
	in := Input{Members: members(4), Syncs: syncs(40)}
	for i := range in.Syncs {
		in.Syncs[i].Weight = 1 + i%5
	}
	in.Syncs[0].Weight = 30
	p := balance(t, Sticky(), in)
	mustValid(t, in, p)
	if msg := balanceError(in, p, func(c int64) *big.Rat { return big.NewRat(c, 1) }); msg != "" {
		t.Fatal(msg)
	}
	// The heavy sync widens the bound only where it runs: the others are
	// within a light sync of each other.
	l := loads(in, p)
	var others []int64
	for m, load := range l {
		if m != p["s00000"] {
			others = append(others, load)
		}
	}
	if slices.Max(others)-slices.Min(others) > 5 {
		t.Fatalf("loads %v: members without the heavy sync differ by more than the heaviest light sync", l)
	}
}

func TestStickyDraining(t *testing.T) {
	in := Input{Members: members(3), Syncs: syncs(9)}
	in.Current = balance(t, Sticky(), in)
	in.Members[1].Draining = true
	p := balance(t, Sticky(), in)
	mustValid(t, in, p)
	if c := counts(in, p)["m001"]; c != 0 {
		t.Fatalf("draining member kept %d syncs", c)
	}
	for _, id := range moved(in, in.Current, p) {
		if in.Current[id] != "m001" {
			t.Fatalf("sync %s moved from %s, which is not draining", id, in.Current[id])
		}
	}

	// When every eligible member drains, the sync stays where it runs.
	in.Syncs = append(in.Syncs, assignment.Sync{ID: "pinned", Labels: map[string]string{"require:host": "m001"}})
	in.Members[1].Labels = map[string]string{"host": "m001"}
	in.Current = maps.Clone(p)
	in.Current["pinned"] = "m001"
	p = balance(t, Sticky(), in)
	mustValid(t, in, p)
	if p["pinned"] != "m001" {
		t.Fatalf("pinned sync went to %q, want it kept on its draining member", p["pinned"])
	}
}

func TestStickyConstraints(t *testing.T) {
	in := Input{Members: []assignment.Member{
		{ID: "eu-small", Weight: 1, Labels: map[string]string{"region": "eu"}},
		{ID: "eu-large", Weight: 3, Labels: map[string]string{"region": "eu"}},
		{ID: "us-1", Weight: 1, Labels: map[string]string{"region": "us"}},
		{ID: "us-2", Weight: 1, Labels: map[string]string{"region": "us"}},
	}}
	for i := range 400 {
		in.Syncs = append(in.Syncs, assignment.Sync{ID: fmt.Sprintf("eu-%03d", i), Labels: map[string]string{"require:region": "eu"}})
		in.Syncs = append(in.Syncs, assignment.Sync{ID: fmt.Sprintf("free-%03d", i)})
	}
	in.Syncs = append(in.Syncs, assignment.Sync{ID: "mars", Labels: map[string]string{"require:region": "mars"}})
	p := balance(t, Sticky(), in)
	mustValid(t, in, p)
	if _, ok := p["mars"]; ok {
		t.Fatal("a sync no member is eligible for was assigned")
	}
	// The 400 eu syncs go 1:3 to the eu members (100, 300); the 400 free
	// syncs top everyone up to the same load per unit of weight: 800/6
	// units each, so 133⅓ for weight 1 and 400 for weight 3.
	want := map[string]int{"eu-small": 133, "eu-large": 400, "us-1": 133, "us-2": 133}
	for m, c := range counts(in, p) {
		if d := c - want[m]; d < -1 || d > 1 {
			t.Fatalf("member %s has %d syncs, want about %d (all: %v)", m, c, want[m], counts(in, p))
		}
	}
}

func TestStickyIgnoresStaleCurrent(t *testing.T) {
	in := Input{Members: members(2), Syncs: syncs(4), Current: assignment.Plan{
		"s00000": "m000", "s00001": "gone", "deleted": "m000", "s00003": "m001",
	}}
	p := balance(t, Sticky(), in)
	mustValid(t, in, p)
	if p["s00000"] != "m000" || p["s00003"] != "m001" {
		t.Fatalf("valid owners not kept: %v", p)
	}
	if _, ok := p["deleted"]; ok {
		t.Fatal("a deleted sync was planned")
	}
}

func TestStickySpread(t *testing.T) {
	// Six members in three zones, 20 tenants of 6 syncs each: every
	// tenant should run 2 syncs in each zone. After a member of z0 leaves,
	// z0 holds only 24 of the 120 syncs, so most tenants have one sync
	// there and split the other five 2:3 between z1 and z2.
	var in Input
	for i := range 6 {
		in.Members = append(in.Members, assignment.Member{ID: fmt.Sprintf("m%d", i), Labels: map[string]string{"zone": fmt.Sprintf("z%d", i%3)}})
	}
	for tn := range 20 {
		for k := range 6 {
			in.Syncs = append(in.Syncs, assignment.Sync{ID: fmt.Sprintf("t%02d-%d", tn, k), Labels: map[string]string{"tenant": fmt.Sprintf("t%02d", tn)}})
		}
	}
	b := Sticky(Spread("tenant", "zone"))
	check := func(in Input, p assignment.Plan, slack int) {
		t.Helper()
		mustValid(t, in, p)
		if msg := balanceError(in, p, func(int64) *big.Rat { return big.NewRat(1, 1) }); msg != "" {
			t.Fatal(msg)
		}
		zoneOf := map[string]string{}
		for _, m := range in.Members {
			zoneOf[m.ID] = m.Labels["zone"]
		}
		perZone := map[string]map[string]int{}
		for _, s := range in.Syncs {
			tn := s.Labels["tenant"]
			if perZone[tn] == nil {
				perZone[tn] = map[string]int{"z0": 0, "z1": 0, "z2": 0}
			}
			perZone[tn][zoneOf[p[s.ID]]]++
		}
		for tn, zones := range perZone {
			c := slices.Collect(maps.Values(zones))
			if slices.Max(c)-slices.Min(c) > slack || slices.Min(c) == 0 {
				t.Fatalf("tenant %s spread over zones as %v", tn, zones)
			}
		}
	}
	p := balance(t, b, in)
	check(in, p, 0)
	in.Current = p
	in.Members = in.Members[1:]
	check(in, balance(t, b, in), 2)
}

// A context that ends after a number of checks, to show that Sticky stops
// in the middle of its work, not only at its start.
type countdownContext struct {
	context.Context
	left int
}

func (c *countdownContext) Err() error {
	if c.left--; c.left < 0 {
		return context.DeadlineExceeded
	}
	return nil
}

func TestBalancersStopWithContext(t *testing.T) {
	in := Input{Members: members(50), Syncs: syncs(20_000)}
	for name, b := range balancers() {
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		if _, err := b.Balance(ctx, in); !errors.Is(err, context.Canceled) {
			t.Errorf("%s with a cancelled context: %v", name, err)
		}
		if _, err := b.Balance(&countdownContext{Context: context.Background(), left: 3}, in); !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("%s with a context ending mid-way: %v", name, err)
		}
	}
}

// The internal state Sticky ends in is an equilibrium (no single move
// improves balance) and its heaps are in order.
func TestPropertyStickyEquilibrium(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		in := genInput(t, shape{weighted: true, constraints: true, draining: true, current: true})
		o := stickyOptions{}
		if rapid.Bool().Draw(t, "spread") {
			Spread("tenant", "zone")(&o)
		}
		p, err := newProblem(in)
		if err != nil {
			t.Fatal(err)
		}
		s, err := newStickyState(p, o)
		if err != nil {
			t.Fatal(err)
		}
		s.keep(in.Current, -1)
		if err := s.place(); err != nil {
			t.Fatal(err)
		}
		if err := s.settle(); err != nil {
			t.Fatal(err)
		}
		for i, m := range s.owner {
			if m < 0 {
				continue
			}
			for _, u := range p.groups[p.syncGroup[i]].members {
				if s.dev[u] > s.dev[m]+s.scale[m]*p.syncWeight[i] {
					t.Fatalf("moving sync %d from member %d to %d would improve balance", i, m, u)
				}
			}
		}
		for g := range s.groups {
			// Heaps catch up lazily, when their group is next used.
			sg := s.heaps(int32(g))
			for slot, m := range sg.members {
				if sg.roomKey[slot] != s.dev[m] {
					t.Fatalf("group %d: slot %d ordered by room %d, has %d", g, slot, sg.roomKey[slot], s.dev[m])
				}
			}
			for _, h := range []*slotHeap{&sg.room, &sg.holders} {
				for x := 1; x < len(h.items); x++ {
					if h.less(h.items[x], h.items[(x-1)/2]) {
						t.Fatalf("group %d: heap out of order at %d", g, x)
					}
				}
			}
		}
	})
}

// Spreading over hundreds of zones (here: one per host, anti-affinity)
// keeps its counts in a map rather than a table; the result is the same
// kind of spread.
func TestStickySpreadManyZones(t *testing.T) {
	var in Input
	for i := range 300 {
		in.Members = append(in.Members, assignment.Member{ID: fmt.Sprintf("host-%03d", i), Labels: map[string]string{"host": fmt.Sprintf("host-%03d", i)}})
	}
	for tn := range 300 {
		for k := range 2 {
			in.Syncs = append(in.Syncs, assignment.Sync{ID: fmt.Sprintf("t%03d-%d", tn, k), Labels: map[string]string{"tenant": fmt.Sprintf("t%03d", tn)}})
		}
	}
	p, err := newProblem(in)
	if err != nil {
		t.Fatal(err)
	}
	o := stickyOptions{}
	Spread("tenant", "host")(&o)
	if sp := newSpreadState(p, o); sp.sparse == nil {
		t.Fatal("expected the sparse count map for 300 tenants × 300 zones")
	}
	// Start from the worst spread: both syncs of each tenant on one host.
	in.Current = assignment.Plan{}
	for tn := range 300 {
		for k := range 2 {
			in.Current[fmt.Sprintf("t%03d-%d", tn, k)] = fmt.Sprintf("host-%03d", tn)
		}
	}
	plan := balance(t, Sticky(Spread("tenant", "host")), in)
	mustValid(t, in, plan)
	for tn := range 300 {
		a, b := plan[fmt.Sprintf("t%03d-0", tn)], plan[fmt.Sprintf("t%03d-1", tn)]
		if a == b {
			t.Fatalf("tenant t%03d has both syncs on %s", tn, a)
		}
	}
}

// Absurd weights are capped, not overflowed.
func TestHugeWeights(t *testing.T) {
	in := Input{Members: members(3), Syncs: syncs(50)}
	in.Members[0].Weight = 1 << 62
	in.Members[1].Weight = 1 << 30
	for i := range in.Syncs {
		in.Syncs[i].Weight = 1 << (20 + i%40)
	}
	for name, b := range balancers() {
		p := balance(t, b, in)
		mustValid(t, in, p)
		in2 := in
		in2.Current = p
		if name == "Sticky" {
			if again := balance(t, b, in2); !maps.Equal(again, p) {
				t.Fatalf("Sticky not stable with huge weights: %v", moved(in, p, again))
			}
		}
	}
}
