package rebalance

import (
	"context"
	"fmt"
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
