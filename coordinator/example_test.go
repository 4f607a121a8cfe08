package coordinator_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"strconv"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/baton-go/baton/assignment"
	"github.com/baton-go/baton/coordinator"
	"github.com/baton-go/baton/internal/embedded"
	"github.com/baton-go/baton/internal/etcdtest"
	"github.com/baton-go/baton/rebalance"
)

// startEtcd runs a throwaway single-node etcd for an example and returns a
// client to it; stop closes both. A real service connects to its etcd
// cluster instead.
func startEtcd() (cli *clientv3.Client, stop func()) {
	dir, err := os.MkdirTemp("", "baton-example-")
	if err != nil {
		panic(err)
	}
	srv, err := embedded.Start(dir, embedded.WithUnsafeNoFsync())
	if err != nil {
		panic(err)
	}
	cli, err = clientv3.New(clientv3.Config{Endpoints: srv.Endpoints(), DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		panic(err)
	}
	return cli, func() {
		cli.Close()
		srv.Close()
		os.RemoveAll(dir)
	}
}

// receive waits for the next value on ch, and gives up loudly after 20s so
// a broken example fails instead of hanging.
func receive[T any](ch <-chan T) T {
	select {
	case v := <-ch:
		return v
	case <-time.After(20 * time.Second):
		panic("example: nothing received in 20s")
	}
}

// A member joins a group, runs the syncs the leader gives it, and leaves.
func ExampleNew() {
	cli, stop := startEtcd()
	defer stop()
	ctx := context.Background()

	store := coordinator.NewSyncStore(cli, "orders")
	for _, id := range []string{"orders-eu", "orders-us"} {
		if err := store.Put(ctx, assignment.Sync{ID: id, Spec: []byte(`{"table":"orders"}`)}); err != nil {
			panic(err)
		}
	}

	started := make(chan string, 2)
	var mu sync.Mutex
	var stopped []string
	h := coordinator.HandlerFuncs{
		Assign: func(ctx context.Context, c *assignment.Claim) error {
			started <- c.ID() // start the work on a goroutine; return quickly
			return nil
		},
		Revoke: func(ctx context.Context, c *assignment.Claim, why assignment.RevokeReason) {
			mu.Lock()
			stopped = append(stopped, c.ID()+" ("+why.String()+")")
			mu.Unlock()
		},
	}
	co, err := coordinator.New(cli, "orders", h,
		coordinator.WithMemberID("worker-1"), // a stable ID, such as a pod name
		coordinator.WithTTL(5*time.Second))
	if err != nil {
		panic(err)
	}
	if err := co.Join(ctx); err != nil {
		panic(err)
	}
	got := []string{receive(started), receive(started)}
	slices.Sort(got)
	fmt.Println("worker-1 runs", got, "and leads:", co.IsLeader())

	// Leave hands everything over (here to nobody) and stops.
	if err := co.Leave(ctx); err != nil {
		panic(err)
	}
	slices.Sort(stopped)
	fmt.Println("stopped", stopped)
	// Output:
	// worker-1 runs [orders-eu orders-us] and leads: true
	// stopped [orders-eu (leaving) orders-us (leaving)]
}

// Runner turns a blocking function into a Handler: it runs for as long as
// the member owns the sync, and is restarted with the new spec when the spec
// changes.
func ExampleRunner() {
	cli, stop := startEtcd()
	defer stop()
	ctx := context.Background()
	store := coordinator.NewSyncStore(cli, "reports")
	if err := store.Put(ctx, assignment.Sync{ID: "daily", Spec: []byte(`{"hour":6}`)}); err != nil {
		panic(err)
	}

	running := make(chan struct{}, 1)
	h := coordinator.Runner(func(ctx context.Context, c *assignment.Claim) error {
		fmt.Printf("run %s with spec %s\n", c.ID(), c.Sync().Spec)
		running <- struct{}{}
		<-ctx.Done() // do the work until ownership ends
		fmt.Printf("%s stopped\n", c.ID())
		return nil
	})
	co, err := coordinator.New(cli, "reports", h, coordinator.WithMemberID("reporter"))
	if err != nil {
		panic(err)
	}
	if err := co.Join(ctx); err != nil {
		panic(err)
	}
	receive(running)

	// A new spec restarts run on the same member, with the same token.
	if err := store.Put(ctx, assignment.Sync{ID: "daily", Spec: []byte(`{"hour":7}`)}); err != nil {
		panic(err)
	}
	receive(running)
	if err := co.Leave(ctx); err != nil {
		panic(err)
	}
	// Output:
	// run daily with spec {"hour":6}
	// daily stopped
	// run daily with spec {"hour":7}
	// daily stopped
}

// A SyncStore is the admin side: it needs no membership.
func ExampleSyncStore() {
	cli, stop := startEtcd()
	defer stop()
	ctx := context.Background()
	store := coordinator.NewSyncStore(cli, "orders")

	_ = store.Put(ctx, assignment.Sync{ID: "orders-eu", Spec: []byte(`{"region":"eu"}`)})
	_ = store.Put(ctx, assignment.Sync{ID: "orders-us", Weight: 3, Labels: map[string]string{"tier": "gold"}, Spec: []byte(`{"region":"us"}`)})
	err := store.Put(ctx, assignment.Sync{ID: "orders-xx", Spec: []byte(`{not json`)})
	fmt.Println("invalid spec refused:", errors.Is(err, coordinator.ErrInvalidSpec))
	err = store.Put(ctx, assignment.Sync{ID: "orders/../other-group"})
	fmt.Println("invalid ID refused:", errors.Is(err, assignment.ErrInvalidID))

	syncs, err := store.List(ctx)
	if err != nil {
		panic(err)
	}
	for _, sy := range syncs {
		fmt.Printf("%s weight=%d labels=%v spec=%s\n", sy.ID, sy.EffectiveWeight(), sy.Labels, sy.Spec)
	}

	_ = store.Delete(ctx, "orders-eu")
	syncs, _ = store.List(ctx)
	fmt.Println("after delete:", len(syncs), "sync,", syncs[0].ID)
	// Output:
	// invalid spec refused: true
	// invalid ID refused: true
	// orders-eu weight=1 labels=map[] spec={"region":"eu"}
	// orders-us weight=3 labels=map[tier:gold] spec={"region":"us"}
	// after delete: 1 sync, orders-us
}

// A sync saves its position with a fenced checkpoint; the next owner
// resumes from it, and the previous owner can no longer write.
func Example_saveCheckpoint() {
	cli, stop := startEtcd()
	defer stop()
	ctx := context.Background()
	if err := coordinator.NewSyncStore(cli, "copy").Put(ctx, assignment.Sync{ID: "orders"}); err != nil {
		panic(err)
	}

	claims := make(chan *assignment.Claim, 2)
	worker := func(member string) coordinator.Handler {
		return coordinator.Runner(func(ctx context.Context, c *assignment.Claim) error {
			b, err := c.LoadCheckpoint(ctx)
			if err != nil {
				return err
			}
			offset, _ := strconv.Atoi(string(b)) // no checkpoint yet: 0
			fmt.Printf("%s starts %s at offset %d\n", member, c.ID(), offset)
			offset += 42 // copy some rows...
			if err := c.SaveCheckpoint(ctx, []byte(strconv.Itoa(offset))); err != nil {
				return err // ErrNotOwner: the sync moved; stop at once
			}
			fmt.Printf("%s saved offset %d\n", member, offset)
			claims <- c
			<-ctx.Done()
			return nil
		})
	}
	first, err := coordinator.New(cli, "copy", worker("first"), coordinator.WithMemberID("first"))
	if err != nil {
		panic(err)
	}
	if err := first.Join(ctx); err != nil {
		panic(err)
	}
	old := receive(claims)

	second, err := coordinator.New(cli, "copy", worker("second"), coordinator.WithMemberID("second"))
	if err != nil {
		panic(err)
	}
	if err := second.Join(ctx); err != nil {
		panic(err)
	}
	// first leaves: the sync moves to second, which resumes at 42.
	if err := first.Leave(ctx); err != nil {
		panic(err)
	}
	current := receive(claims)
	fmt.Println("token grew:", current.Token() > old.Token())
	err = old.SaveCheckpoint(ctx, []byte("0"))
	fmt.Println("old owner's write refused:", errors.Is(err, assignment.ErrNotOwner))
	if err := second.Leave(ctx); err != nil {
		panic(err)
	}
	// Output:
	// first starts orders at offset 0
	// first saved offset 42
	// second starts orders at offset 42
	// second saved offset 84
	// token grew: true
	// old owner's write refused: true
}

// A custom Balancer: syncs labelled tier=heavy go to a member labelled
// size=large, the rest round-robin over the members that are not draining.
// Every member is given the same Balancer, since any of them may lead.
func ExampleWithBalancer() {
	cli, stop := startEtcd()
	defer stop()
	ctx := context.Background()

	heavyOnLarge := rebalance.BalancerFunc(func(ctx context.Context, in rebalance.Input) (assignment.Plan, error) {
		// in.Members and in.Syncs are sorted by ID, so the plan is
		// deterministic, as a Balancer's must be.
		var active, large []assignment.Member
		for _, m := range in.Members {
			if !m.Draining {
				active = append(active, m)
			}
		}
		if len(active) == 0 {
			active = in.Members // all draining: they keep the work
		}
		for _, m := range active {
			if m.Labels["size"] == "large" {
				large = append(large, m)
			}
		}
		plan := assignment.Plan{}
		if len(active) == 0 {
			return plan, nil
		}
		next := 0
		for _, s := range in.Syncs {
			if s.Labels["tier"] == "heavy" && len(large) > 0 {
				plan[s.ID] = large[0].ID
				continue
			}
			plan[s.ID] = active[next%len(active)].ID
			next++
		}
		return plan, nil // the leader checks it with rebalance.Validate before writing
	})

	store := coordinator.NewSyncStore(cli, "jobs")
	_ = store.Put(ctx, assignment.Sync{ID: "report", Labels: map[string]string{"tier": "heavy"}})
	for _, id := range []string{"a", "b", "c"} {
		_ = store.Put(ctx, assignment.Sync{ID: id})
	}
	var members []*coordinator.Coordinator
	for id, size := range map[string]string{"big": "large", "small": "small"} {
		co, err := coordinator.New(cli, "jobs", coordinator.HandlerFuncs{},
			coordinator.WithMemberID(id),
			coordinator.WithLabels(map[string]string{"size": size}),
			coordinator.WithBalancer(heavyOnLarge))
		if err != nil {
			panic(err)
		}
		if err := co.Join(ctx); err != nil {
			panic(err)
		}
		members = append(members, co)
	}
	// Wait until both members are in the plan and every sync runs there.
	var st *coordinator.GroupStatus
	settled := etcdtest.WaitUntil(20*time.Second, func() bool {
		s, err := coordinator.Describe(ctx, cli, "jobs")
		if err != nil {
			return false
		}
		st = s
		return len(s.Members) == 2 && s.Pending == 0 && s.Members[0].Owned > 0 && s.Members[1].Owned > 0
	})
	if !settled {
		panic("example: the group did not settle")
	}
	for _, s := range st.Syncs {
		fmt.Printf("%s -> %s\n", s.ID, s.Owner)
	}
	for _, co := range members {
		if err := co.Leave(ctx); err != nil {
			panic(err)
		}
	}
	// Output:
	// a -> big
	// b -> small
	// c -> big
	// report -> big
}
