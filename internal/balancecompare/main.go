// Command balancecompare runs Baton's built-in balancers, and a plain
// consistent-hash ring for reference, through the same membership events and
// prints after each event how many syncs moved and how loaded the busiest
// member is, as a Markdown table (BALANCERS.md shows its output).
//
//	go run ./internal/balancecompare [-syncs 10000] [-members 20]
//
// The events: every sync placed on the starting members, one member
// joins, one leaves, one member's weight doubles. Each balancer gets its
// own previous plan as Current, as the Baton leader would pass it.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"

	"github.com/baton-go/baton/assignment"
	"github.com/baton-go/baton/rebalance"
)

func main() {
	syncs := flag.Int("syncs", 10_000, "number of syncs (weight 1 each)")
	members := flag.Int("members", 20, "number of members at the start (weight 1 each)")
	flag.Parse()
	if *syncs < 1 || *members < 2 {
		fmt.Fprintln(os.Stderr, "balancecompare: need at least 1 sync and 2 members")
		os.Exit(2)
	}
	if err := run(os.Stdout, *syncs, *members); err != nil {
		fmt.Fprintln(os.Stderr, "balancecompare:", err)
		os.Exit(1)
	}
}

// event is one step of the scenario: what it is called and what it does to
// the membership.
type event struct {
	name  string
	apply func([]assignment.Member) []assignment.Member
}

func scenario(n int) []event {
	leaver := fmt.Sprintf("member-%02d", n/4)
	heavier := fmt.Sprintf("member-%02d", n/2)
	return []event{
		{fmt.Sprintf("start: %d members", n), func(ms []assignment.Member) []assignment.Member { return ms }},
		{fmt.Sprintf("join: member-%02d", n), func(ms []assignment.Member) []assignment.Member {
			return append(slices.Clone(ms), assignment.Member{ID: fmt.Sprintf("member-%02d", n), Weight: 1})
		}},
		{"leave: " + leaver, func(ms []assignment.Member) []assignment.Member {
			return slices.DeleteFunc(slices.Clone(ms), func(m assignment.Member) bool { return m.ID == leaver })
		}},
		{"weight ×2: " + heavier, func(ms []assignment.Member) []assignment.Member {
			ms = slices.Clone(ms)
			for i := range ms {
				if ms[i].ID == heavier {
					ms[i].Weight *= 2
				}
			}
			return ms
		}},
	}
}

// result is what one balancer did at one event.
type result struct {
	moved   int
	maxLoad float64 // the highest load per unit of weight, over the mean
}

func run(w io.Writer, nSyncs, nMembers int) error {
	balancers := []struct {
		name string
		b    rebalance.Balancer
	}{
		{"Sticky", rebalance.Sticky()},
		{"RoundRobin", rebalance.RoundRobin()},
		{"Rendezvous", rebalance.Rendezvous()},
		{"Ring (100 vnodes)", ring(100)},
	}
	start := make([]assignment.Member, nMembers)
	for i := range start {
		start[i] = assignment.Member{ID: fmt.Sprintf("member-%02d", i), Weight: 1}
	}
	syncs := make([]assignment.Sync, nSyncs)
	for i := range syncs {
		syncs[i] = assignment.Sync{ID: fmt.Sprintf("sync-%05d", i), Weight: 1}
	}
	events := scenario(nMembers)
	results := make([][]result, len(events))
	for e := range results {
		results[e] = make([]result, len(balancers))
	}
	for b, bal := range balancers {
		in := rebalance.Input{Members: start, Syncs: syncs}
		var prev assignment.Plan
		for e, ev := range events {
			in.Members = ev.apply(in.Members)
			in.Current = prev
			plan, err := bal.b.Balance(context.Background(), in)
			if err != nil {
				return fmt.Errorf("%s at %q: %w", bal.name, ev.name, err)
			}
			if err := rebalance.Validate(in, plan); err != nil {
				return fmt.Errorf("%s at %q: %w", bal.name, ev.name, err)
			}
			results[e][b] = result{moved: moves(prev, plan), maxLoad: maxOverMean(in, plan)}
			prev = plan
		}
	}

	fmt.Fprintf(w, "%d syncs of weight 1; members of weight 1 unless doubled. Each cell: syncs moved / busiest member's load per unit of weight ÷ the mean.\n\n", nSyncs)
	header := []string{"event"}
	for _, bal := range balancers {
		header = append(header, bal.name)
	}
	fmt.Fprintf(w, "| %s |\n|%s\n", strings.Join(header, " | "), strings.Repeat(" --- |", len(header)))
	for e, ev := range events {
		row := []string{ev.name}
		for _, r := range results[e] {
			row = append(row, fmt.Sprintf("%d / %.3f", r.moved, r.maxLoad))
		}
		fmt.Fprintf(w, "| %s |\n", strings.Join(row, " | "))
	}
	return nil
}

// moves counts syncs whose owner differs between a and b; at the start
// (a == nil) that is every placed sync.
func moves(a, b assignment.Plan) int {
	return assignment.Plan(a).Moves(b)
}

func maxOverMean(in rebalance.Input, p assignment.Plan) float64 {
	load := map[string]int{}
	for _, m := range p {
		load[m]++
	}
	var totalWeight int
	for _, m := range in.Members {
		totalWeight += m.EffectiveWeight()
	}
	mean := float64(len(p)) / float64(totalWeight)
	var worst float64
	for _, m := range in.Members {
		worst = max(worst, float64(load[m.ID])/float64(m.EffectiveWeight()))
	}
	return worst / mean
}
