package rebalance_test

import (
	"context"
	"errors"
	"fmt"

	"github.com/baton-go/baton/assignment"
	"github.com/baton-go/baton/rebalance"
)

// A custom Balancer: syncs labelled "prefer" run on the member they name
// when that member may take them; everything else is left to Sticky.
// Overriding Sticky's plan trades balance for the preference (beta ends up
// with three syncs) and must keep the plan valid: the leader checks it with
// Validate, as here.
func Example() {
	sticky := rebalance.Sticky()
	prefer := rebalance.BalancerFunc(func(ctx context.Context, in rebalance.Input) (assignment.Plan, error) {
		plan, err := sticky.Balance(ctx, in)
		if err != nil {
			return nil, err
		}
		for _, s := range in.Syncs {
			for _, m := range in.Members {
				if m.ID == s.Labels["prefer"] && !m.Draining && rebalance.Eligible(m, s) {
					plan[s.ID] = m.ID
				}
			}
		}
		return plan, nil
	})

	in := rebalance.Input{
		Members: []assignment.Member{{ID: "alpha"}, {ID: "beta"}, {ID: "gamma", Draining: true}},
		Syncs: []assignment.Sync{
			{ID: "billing", Labels: map[string]string{"prefer": "beta"}},
			{ID: "emails"},
			{ID: "reports", Labels: map[string]string{"prefer": "gamma"}}, // gamma drains: ignored
			{ID: "search"},
		},
	}
	plan, err := prefer.Balance(context.Background(), in)
	if err != nil {
		panic(err)
	}
	fmt.Println(plan)
	fmt.Println(rebalance.Validate(in, plan))
	// Output:
	// map[billing:beta emails:beta reports:alpha search:beta]
	// <nil>
}

// Sticky moves only what a membership change requires: the joiner takes
// its share and nothing else moves.
func ExampleSticky() {
	in := rebalance.Input{}
	for i := range 3 {
		in.Members = append(in.Members, assignment.Member{ID: fmt.Sprintf("m%d", i)})
	}
	for i := range 12 {
		in.Syncs = append(in.Syncs, assignment.Sync{ID: fmt.Sprintf("s%02d", i)})
	}
	before, _ := rebalance.Sticky().Balance(context.Background(), in)

	in.Current = before
	in.Members = append(in.Members, assignment.Member{ID: "m3"})
	after, _ := rebalance.Sticky().Balance(context.Background(), in)
	fmt.Println("moves:", before.Moves(after))
	fmt.Println("per member:", len(after.ByMember()["m0"]), len(after.ByMember()["m1"]), len(after.ByMember()["m2"]), len(after.ByMember()["m3"]))
	// Output:
	// moves: 3
	// per member: 3 3 3 3
}

// Validate names the sync and the member of every violation.
func ExampleValidate() {
	in := rebalance.Input{
		Members: []assignment.Member{{ID: "eu-1", Labels: map[string]string{"region": "eu"}}},
		Syncs:   []assignment.Sync{{ID: "gdpr-export", Labels: map[string]string{rebalance.RequirePrefix + "region": "eu"}}, {ID: "mailer"}},
	}
	err := rebalance.Validate(in, assignment.Plan{"gdpr-export": "us-1"})
	fmt.Println(err)
	fmt.Println(errors.Is(err, rebalance.ErrUnassigned))
	// Output:
	// rebalance: invalid plan: sync "gdpr-export" on member "us-1": member not live
	// rebalance: invalid plan: sync "mailer": sync unassigned although a member is eligible (member "eu-1")
	// true
}
