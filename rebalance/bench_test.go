package rebalance

import (
	"context"
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/baton-go/baton/assignment"
)

// benchInput is a leader's typical call: n members with labels, syncs of
// weight 1 to 3, and as Current the plan b made before the last member
// joined.
func benchInput(b *testing.B, bal Balancer, nSyncs, nMembers int) Input {
	in := Input{Members: make([]assignment.Member, nMembers), Syncs: make([]assignment.Sync, nSyncs)}
	for i := range in.Members {
		in.Members[i] = assignment.Member{
			ID:     fmt.Sprintf("member-%04d", i),
			Weight: 1 + i%2,
			Labels: map[string]string{"zone": fmt.Sprintf("z%d", i%3), "region": "eu"},
		}
	}
	for i := range in.Syncs {
		in.Syncs[i] = assignment.Sync{
			ID:     fmt.Sprintf("sync-%06d", i),
			Weight: 1 + i%3,
			Labels: map[string]string{"tenant": fmt.Sprintf("t%d", i%97)},
		}
	}
	before := in
	before.Members = in.Members[:nMembers-1]
	cur, err := bal.Balance(context.Background(), before)
	if err != nil {
		b.Fatal(err)
	}
	in.Current = cur
	return in
}

func BenchmarkBalancers(b *testing.B) {
	balancers := []struct {
		name string
		b    Balancer
	}{
		{"Sticky", Sticky()},
		{"StickySpread", Sticky(Spread("tenant", "zone"))},
		{"RoundRobin", RoundRobin()},
		{"Rendezvous", Rendezvous()},
		{"ThrottleSticky100", Throttle(Sticky(), 100)},
	}
	for _, bal := range balancers {
		for _, nSyncs := range []int{1_000, 10_000, 100_000} {
			for _, nMembers := range []int{10, 100, 1000} {
				b.Run(fmt.Sprintf("%s/syncs=%d/members=%d", bal.name, nSyncs, nMembers), func(b *testing.B) {
					in := benchInput(b, bal.b, nSyncs, nMembers)
					b.ReportAllocs()
					b.ResetTimer()
					for b.Loop() {
						if _, err := bal.b.Balance(context.Background(), in); err != nil {
							b.Fatal(err)
						}
					}
				})
			}
		}
	}
}

// BenchmarkStickyColdStart places every sync from nothing, the leader's
// first round.
func BenchmarkStickyColdStart(b *testing.B) {
	for _, nMembers := range []int{10, 100, 1000} {
		b.Run(fmt.Sprintf("syncs=100000/members=%d", nMembers), func(b *testing.B) {
			in := benchInput(b, Sticky(), 100_000, nMembers)
			in.Current = nil
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				if _, err := Sticky().Balance(context.Background(), in); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkValidate checks a plan of 100,000 syncs, as the leader does after
// every Balance call.
func BenchmarkValidate(b *testing.B) {
	for _, nMembers := range []int{10, 1000} {
		b.Run(fmt.Sprintf("syncs=100000/members=%d", nMembers), func(b *testing.B) {
			in := benchInput(b, Sticky(), 100_000, nMembers)
			p, err := Sticky().Balance(context.Background(), in)
			if err != nil {
				b.Fatal(err)
			}
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				if err := Validate(in, p); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// constrainedInput is the shape that made Sticky's cost grow with the
// number of constraint groups per member: nMembers members, each with keys
// binary labels (label k<i> is "a" or "b"), and nSyncs syncs each requiring
// every label with probability 1/3 (value "a" or "b"). A member then belongs
// to 2^keys groups out of up to 3^keys. With weighted, member and sync
// weights are 1–3. The input is drawn from a fixed seed.
func constrainedInput(nSyncs, nMembers, keys int, weighted bool) Input {
	r := rand.New(rand.NewPCG(uint64(keys), uint64(nSyncs)))
	ab := func() string { return string(rune('a' + r.IntN(2))) }
	in := Input{Members: make([]assignment.Member, nMembers), Syncs: make([]assignment.Sync, nSyncs)}
	for i := range in.Members {
		m := assignment.Member{ID: fmt.Sprintf("member-%04d", i), Weight: 1, Labels: map[string]string{}}
		for k := range keys {
			m.Labels[fmt.Sprintf("k%d", k)] = ab()
		}
		if weighted {
			m.Weight = 1 + r.IntN(3)
		}
		in.Members[i] = m
	}
	for i := range in.Syncs {
		s := assignment.Sync{ID: fmt.Sprintf("sync-%06d", i), Weight: 1, Labels: map[string]string{}}
		for k := range keys {
			if r.IntN(3) == 0 {
				s.Labels[fmt.Sprintf("%sk%d", RequirePrefix, k)] = ab()
			}
		}
		if weighted {
			s.Weight = 1 + r.IntN(3)
		}
		in.Syncs[i] = s
	}
	return in
}

// BenchmarkStickyConstrained is Sticky on 100,000 syncs × 1,000 members
// with binary-label constraints (constrainedInput): cold (no Current), and
// after a member joins (Current is the plan from before the join).
func BenchmarkStickyConstrained(b *testing.B) {
	for _, c := range []struct {
		keys     int
		weighted bool
		join     bool
	}{{3, false, false}, {5, false, false}, {7, false, false}, {9, false, false}, {10, true, false}, {7, false, true}} {
		name := fmt.Sprintf("keys=%d", c.keys)
		if c.weighted {
			name += "/weights=1-3"
		}
		if c.join {
			name += "/join"
		} else {
			name += "/cold"
		}
		b.Run(name, func(b *testing.B) {
			in := constrainedInput(100_000, 1000, c.keys, c.weighted)
			if c.join {
				before := in
				before.Members = in.Members[:len(in.Members)-1]
				cur, err := Sticky().Balance(context.Background(), before)
				if err != nil {
					b.Fatal(err)
				}
				in.Current = cur
			}
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				if _, err := Sticky().Balance(context.Background(), in); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
