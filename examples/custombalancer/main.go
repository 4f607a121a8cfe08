// Custombalancer plugs a user-written Balancer into Baton: syncs labelled
// "pin-to=<member>" run on that member whenever it is live and not
// draining; everything else is balanced by the default Sticky balancer.
//
//	go run ./examples/custombalancer                 # on an embedded etcd
//	go run ./examples/custombalancer -endpoints 127.0.0.1:2379
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"slices"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/baton-go/baton/assignment"
	"github.com/baton-go/baton/coordinator"
	"github.com/baton-go/baton/internal/demoenv"
	"github.com/baton-go/baton/rebalance"
)

// pinLabel names the member a sync must run on.
const pinLabel = "pin-to"

// pinned returns a Balancer that places every sync labelled pin-to=<member>
// on that member while it is live, eligible and not draining, and leaves the
// rest to next. The leader validates the combined plan before writing it.
func pinned(next rebalance.Balancer) rebalance.Balancer {
	return rebalance.BalancerFunc(func(ctx context.Context, in rebalance.Input) (assignment.Plan, error) {
		members := make(map[string]assignment.Member, len(in.Members))
		for _, m := range in.Members {
			members[m.ID] = m
		}
		plan := assignment.Plan{}
		rest := rebalance.Input{Members: in.Members, Current: in.Current}
		for _, s := range in.Syncs {
			m, ok := members[s.Labels[pinLabel]]
			if ok && !m.Draining && rebalance.Eligible(m, s) {
				plan[s.ID] = m.ID
				continue
			}
			rest.Syncs = append(rest.Syncs, s)
		}
		// The pinned syncs count towards their members' load only through
		// the balance of the rest; for a few pins that is fine.
		others, err := next.Balance(ctx, rest)
		if err != nil {
			return nil, err
		}
		for s, m := range others {
			plan[s] = m
		}
		return plan, nil
	})
}

func main() {
	endpoints := flag.String("endpoints", "", "comma-separated etcd endpoints; empty starts an embedded etcd")
	flag.Parse()
	if err := run(*endpoints, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "custombalancer:", err)
		os.Exit(1)
	}
}

// run plays the demo and writes the placements to out. The members'
// handlers do nothing, so only run writes there.
func run(endpoints string, out io.Writer) error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	eps, _, stop, err := demoenv.Etcd(endpoints)
	if err != nil {
		return err
	}
	defer stop()
	newClient := func() (*clientv3.Client, error) { return demoenv.Client(eps) }
	admin, err := newClient()
	if err != nil {
		return err
	}
	defer admin.Close()
	group := demoenv.Group("custombalancer")

	store := coordinator.NewSyncStore(admin, group)
	for i := 1; i <= 6; i++ {
		if err := store.Put(ctx, assignment.Sync{ID: fmt.Sprintf("sync-%d", i)}); err != nil {
			return err
		}
	}
	// The nightly report must run next to the warehouse, on member-b.
	if err := store.Put(ctx, assignment.Sync{ID: "nightly-report", Labels: map[string]string{pinLabel: "member-b"}}); err != nil {
		return err
	}

	var members []*coordinator.Coordinator
	for _, id := range []string{"member-a", "member-b", "member-c"} {
		cli, err := newClient()
		if err != nil {
			return err
		}
		defer cli.Close()
		co, err := coordinator.New(cli, group, coordinator.HandlerFuncs{},
			coordinator.WithMemberID(id),
			coordinator.WithTTL(2*time.Second),
			coordinator.WithBalancer(pinned(rebalance.Sticky())))
		if err != nil {
			return err
		}
		if err := co.Join(ctx); err != nil {
			return err
		}
		members = append(members, co)
	}
	st, err := settled(ctx, admin, group, 7, 3)
	if err != nil {
		return err
	}
	show(out, "3 members", st)

	// member-b drains: the pin yields, and the report runs elsewhere.
	if err := members[1].Leave(ctx); err != nil {
		return err
	}
	if st, err = settled(ctx, admin, group, 7, 2); err != nil {
		return err
	}
	show(out, "member-b left", st)

	for _, co := range slices.Delete(members, 1, 2) {
		if err := co.Leave(ctx); err != nil {
			return err
		}
	}
	return nil
}

// settled waits until all nsyncs syncs run on their target member, on
// nmembers live members, and the plan gives each of them syncs.
func settled(ctx context.Context, cli *clientv3.Client, group string, nsyncs, nmembers int) (*coordinator.GroupStatus, error) {
	for {
		st, err := coordinator.Describe(ctx, cli, group)
		if err == nil && len(st.Syncs) == nsyncs && len(st.Members) == nmembers && st.Pending == 0 && planCoversAll(st) {
			return st, nil
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("group did not settle on %d syncs and %d members: %w", nsyncs, nmembers, ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// planCoversAll reports whether the plan gives every live member syncs.
// Nothing pending alone is not enough: a plan made before the last member
// joined has nothing pending too once its syncs run, and only the member
// it left out gives it away. With more syncs than members, the plan
// leaves no member out.
func planCoversAll(st *coordinator.GroupStatus) bool {
	for _, m := range st.Members {
		if m.Targeted == 0 {
			return false
		}
	}
	return true
}

// show writes where each sync runs, under title.
func show(out io.Writer, title string, st *coordinator.GroupStatus) {
	fmt.Fprintf(out, "%s:\n", title)
	for _, s := range st.Syncs {
		fmt.Fprintf(out, "  %-15s on %s\n", s.ID, s.Owner)
	}
}
