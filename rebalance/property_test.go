package rebalance

import (
	"context"
	"fmt"
	"maps"
	"math/big"
	"reflect"
	"slices"
	"testing"

	"pgregory.net/rapid"

	"github.com/baton-go/baton/assignment"
)

// shape says what genInput may produce.
type shape struct {
	weighted    bool // member and sync weights other than 1
	memberW     bool // member weights other than 1 (implied by weighted)
	constraints bool // require: labels
	draining    bool // draining members
	current     bool // a random current plan with stale entries
	minMembers  int
}

func genInput(t *rapid.T, sh shape) Input {
	var in Input
	n := rapid.IntRange(sh.minMembers, 8).Draw(t, "members")
	for i := range n {
		m := assignment.Member{ID: fmt.Sprintf("m%d", i), Weight: 1, Labels: map[string]string{}}
		if sh.weighted || sh.memberW {
			m.Weight = rapid.IntRange(0, 4).Draw(t, "memberWeight")
		}
		if r := rapid.SampledFrom([]string{"", "eu", "us"}).Draw(t, "region"); r != "" {
			m.Labels["region"] = r
		}
		if z := rapid.SampledFrom([]string{"", "a", "b", "c"}).Draw(t, "zone"); z != "" {
			m.Labels["zone"] = z
		}
		if sh.draining {
			m.Draining = rapid.IntRange(0, 3).Draw(t, "draining") == 0
		}
		in.Members = append(in.Members, m)
	}
	k := rapid.IntRange(0, 60).Draw(t, "syncs")
	for i := range k {
		s := assignment.Sync{ID: fmt.Sprintf("s%02d", i), Weight: 1, Labels: map[string]string{}}
		if sh.weighted {
			s.Weight = rapid.IntRange(0, 3).Draw(t, "syncWeight")
		}
		if tn := rapid.SampledFrom([]string{"", "t0", "t1", "t2"}).Draw(t, "tenant"); tn != "" {
			s.Labels["tenant"] = tn
		}
		if sh.constraints {
			if r := rapid.SampledFrom([]string{"", "", "eu", "us", "mars"}).Draw(t, "requireRegion"); r != "" {
				s.Labels[RequirePrefix+"region"] = r
			}
			if z := rapid.SampledFrom([]string{"", "", "", "a", "b"}).Draw(t, "requireZone"); z != "" {
				s.Labels[RequirePrefix+"zone"] = z
			}
		}
		in.Syncs = append(in.Syncs, s)
	}
	if sh.current {
		in.Current = genCurrent(t, in)
	}
	return in
}

// genCurrent draws a current plan: some syncs on live members, some on
// departed ones, some unassigned, plus entries for syncs that are gone.
func genCurrent(t *rapid.T, in Input) assignment.Plan {
	ids := []string{"gone1", "gone2"}
	for _, m := range in.Members {
		ids = append(ids, m.ID)
	}
	cur := assignment.Plan{}
	for _, s := range in.Syncs {
		if rapid.IntRange(0, 4).Draw(t, "assigned") > 0 {
			cur[s.ID] = rapid.SampledFrom(ids).Draw(t, "owner")
		}
	}
	for i := range rapid.IntRange(0, 3).Draw(t, "staleSyncs") {
		cur[fmt.Sprintf("deleted%d", i)] = rapid.SampledFrom(ids).Draw(t, "staleOwner")
	}
	return cur
}

// balancers are every built-in, as the property tests exercise them.
func balancers() map[string]Balancer {
	return map[string]Balancer{
		"Sticky":         Sticky(),
		"StickySpread":   Sticky(Spread("tenant", "zone")),
		"RoundRobin":     RoundRobin(),
		"Rendezvous":     Rendezvous(),
		"ThrottleSticky": Throttle(Sticky(), 3),
		"ThrottleRR":     Throttle(RoundRobin(), 1),
	}
}

func balance(t interface{ Fatalf(string, ...any) }, b Balancer, in Input) assignment.Plan {
	p, err := b.Balance(context.Background(), in)
	if err != nil {
		t.Fatalf("Balance: %v", err)
	}
	return p
}

func deepCopy(in Input) Input {
	out := Input{Current: maps.Clone(in.Current)}
	for _, m := range in.Members {
		out.Members = append(out.Members, m.Clone())
	}
	for _, s := range in.Syncs {
		out.Syncs = append(out.Syncs, s.Clone())
	}
	return out
}

// Every balancer's plan passes Validate, leaves exactly the unassignable
// syncs out, and does not modify its input.
func TestPropertyValid(t *testing.T) {
	sh := shape{weighted: true, constraints: true, draining: true, current: true}
	for name, b := range balancers() {
		t.Run(name, rapid.MakeCheck(func(t *rapid.T) {
			in := genInput(t, sh)
			before := deepCopy(in)
			p := balance(t, b, in)
			if err := Validate(in, p); err != nil {
				t.Fatalf("invalid plan: %v", err)
			}
			for _, id := range Unassignable(in) {
				if m, ok := p[id]; ok {
					t.Fatalf("unassignable sync %s assigned to %s", id, m)
				}
			}
			if !reflect.DeepEqual(before, in) {
				t.Fatalf("Balance modified its input")
			}
		}))
	}
}

// Every balancer returns the same plan whatever the order of its input.
func TestPropertyDeterministic(t *testing.T) {
	sh := shape{weighted: true, constraints: true, draining: true, current: true}
	for name, b := range balancers() {
		t.Run(name, rapid.MakeCheck(func(t *rapid.T) {
			in := genInput(t, sh)
			want := balance(t, b, in)
			shuffled := in
			shuffled.Members = rapid.Permutation(in.Members).Draw(t, "members order")
			shuffled.Syncs = rapid.Permutation(in.Syncs).Draw(t, "syncs order")
			if got := balance(t, b, shuffled); !maps.Equal(got, want) {
				t.Fatalf("shuffled input gave another plan:\n got %v\nwant %v", got, want)
			}
		}))
	}
}

// Sticky keeps every non-draining member strictly within the heaviest
// sync's weight of its weighted share when there are no constraints,
// whatever the current plan; draining members run nothing.
func TestPropertyStickyBalance(t *testing.T) {
	for _, spread := range []bool{false, true} {
		t.Run(fmt.Sprintf("spread=%v", spread), rapid.MakeCheck(func(t *rapid.T) {
			in := genInput(t, shape{weighted: true, draining: true, current: true, minMembers: 1})
			if !unconstrained(in) {
				t.Skip("every member is draining")
			}
			b := Sticky()
			if spread {
				b = Sticky(Spread("tenant", "zone"))
			}
			p := balance(t, b, in)
			if msg := balanceError(in, p, func(c int64) *big.Rat { return big.NewRat(c, 1) }); msg != "" {
				t.Fatal(msg)
			}
		}))
	}
}

// RoundRobin keeps every member's load below its share plus the heaviest
// sync's weight, and Rendezvous below 1.25 × its share (rounded up) plus that
// weight.
func TestPropertyBaselineBalance(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		in := genInput(t, shape{weighted: true, draining: true, minMembers: 1})
		if !unconstrained(in) || len(in.Syncs) == 0 {
			t.Skip("every member is draining, or nothing to place")
		}
		var total, weight, maxSync int64
		for _, s := range in.Syncs {
			total += int64(s.EffectiveWeight())
			maxSync = max(maxSync, int64(s.EffectiveWeight()))
		}
		for _, m := range in.Members {
			if !m.Draining {
				weight += int64(m.EffectiveWeight())
			}
		}
		rr, hrw := loads(in, balance(t, RoundRobin(), in)), loads(in, balance(t, Rendezvous(), in))
		for _, m := range in.Members {
			if m.Draining {
				continue
			}
			share := big.NewRat(total*int64(m.EffectiveWeight()), weight)
			if got := big.NewRat(rr[m.ID]-maxSync, 1); got.Cmp(share) >= 0 {
				t.Fatalf("RoundRobin: member %s load %d, share %s", m.ID, rr[m.ID], share.FloatString(2))
			}
			limit := new(big.Rat).Mul(share, big.NewRat(5, 4))
			if got := big.NewRat(hrw[m.ID]-maxSync-1, 1); got.Cmp(limit) >= 0 {
				t.Fatalf("Rendezvous: member %s load %d, share %s", m.ID, hrw[m.ID], share.FloatString(2))
			}
		}
	})
}

// Given its own plan as Current, Sticky changes nothing, with constraints,
// draining, weights and spreading.
func TestPropertyStickyStable(t *testing.T) {
	sh := shape{weighted: true, constraints: true, draining: true, current: true}
	for _, b := range []Balancer{Sticky(), Sticky(Spread("tenant", "zone"))} {
		rapid.Check(t, func(t *rapid.T) {
			in := genInput(t, sh)
			p := balance(t, b, in)
			in.Current = p
			if again := balance(t, b, in); !maps.Equal(again, p) {
				t.Fatalf("rerun moved %v\nmembers %+v\nsyncs %+v\nplan %v\nagain %v", moved(in, p, again), in.Members, in.Syncs, p, again)
			}
		})
	}
}

// A joiner takes ⌊N/(n+1)⌋ or ⌈N/(n+1)⌉ syncs and nothing else moves.
func TestPropertyStickyJoin(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		in := genInput(t, shape{minMembers: 1})
		in.Current = balance(t, Sticky(), in)
		before := in.Current
		joiner := assignment.Member{ID: "joiner", Weight: 1}
		in.Members = append(in.Members, joiner)
		after := balance(t, Sticky(), in)
		n, total := len(in.Members), len(in.Syncs)
		got := counts(in, after)["joiner"]
		if got != total/n && got != (total+n-1)/n {
			t.Fatalf("joiner took %d of %d syncs on %d members", got, total, n)
		}
		for _, id := range moved(in, before, after) {
			if after[id] != "joiner" {
				t.Fatalf("sync %s moved from %s to %s, not to the joiner", id, before[id], after[id])
			}
		}
	})
}

// When a member leaves or starts draining, only its syncs move.
func TestPropertyStickyLeave(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		in := genInput(t, shape{minMembers: 2})
		in.Current = balance(t, Sticky(), in)
		before := in.Current
		x := rapid.IntRange(0, len(in.Members)-1).Draw(t, "leaver")
		leaver := in.Members[x].ID
		if rapid.Bool().Draw(t, "drain") {
			in.Members = slices.Clone(in.Members)
			in.Members[x].Draining = true
		} else {
			in.Members = slices.Delete(slices.Clone(in.Members), x, x+1)
		}
		after := balance(t, Sticky(), in)
		for _, id := range moved(in, before, after) {
			if before[id] != leaver {
				t.Fatalf("sync %s moved from %s to %s though only %s left", id, before[id], after[id], leaver)
			}
		}
		if msg := balanceError(in, after, func(int64) *big.Rat { return big.NewRat(1, 1) }); msg != "" {
			t.Fatal(msg)
		}
	})
}

// When member weights change, no member both gains and loses syncs, so no
// sync moves that did not have to (with equal sync weights).
func TestPropertyStickyWeightChange(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		in := genInput(t, shape{memberW: true, minMembers: 1})
		in.Current = balance(t, Sticky(), in)
		before := in.Current
		in.Members = slices.Clone(in.Members)
		for range rapid.IntRange(1, 3).Draw(t, "changes") {
			x := rapid.IntRange(0, len(in.Members)-1).Draw(t, "member")
			in.Members[x].Weight = rapid.IntRange(1, 6).Draw(t, "weight")
		}
		after := balance(t, Sticky(), in)
		gains, losses := map[string]int{}, map[string]int{}
		for _, id := range moved(in, before, after) {
			losses[before[id]]++
			gains[after[id]]++
		}
		for m := range gains {
			if losses[m] > 0 {
				t.Fatalf("member %s both gained %d and lost %d syncs", m, gains[m], losses[m])
			}
		}
		if msg := balanceError(in, after, func(int64) *big.Rat { return big.NewRat(1, 1) }); msg != "" {
			t.Fatal(msg)
		}
	})
}

// Throttle changes at most maxMoves owners beyond the syncs that must move
// (two for a spreading swap), and rerunning it round after round reaches
// the wrapped balancer's own stable plan.
func TestPropertyThrottle(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		in := genInput(t, shape{weighted: true, constraints: true, draining: true, current: true})
		limit := rapid.IntRange(-1, 5).Draw(t, "maxMoves")
		var opts []StickyOption
		if rapid.Bool().Draw(t, "spread") {
			opts = append(opts, Spread("tenant", "zone"))
		}
		b := Throttle(Sticky(opts...), limit)
		p, err := newProblem(in)
		if err != nil {
			t.Fatal(err)
		}
		for round := 0; ; round++ {
			next := balance(t, b, in)
			mustValid(t, in, next)
			optional := 0
			for i, s := range p.syncs {
				from, ok := validOwner(p, in.Current, int32(i))
				if ok && next[s.ID] != from {
					optional++
				}
			}
			bound := max(limit, 1)
			if len(opts) > 0 {
				bound = max(limit, 2) // a swap is not split
			}
			if optional > bound {
				t.Fatalf("round %d: %d optional moves with maxMoves %d", round, optional, limit)
			}
			if maps.Equal(next, in.Current) {
				if final := balance(t, Sticky(opts...), in); !maps.Equal(final, next) {
					t.Fatalf("throttled rounds settled on a plan Sticky would still change: %v", moved(in, next, final))
				}
				return
			}
			if round > 2*len(in.Syncs)+2 {
				t.Fatalf("no fixed point after %d rounds", round)
			}
			in.Current = next
		}
	})
}
