// Quickstart runs a small Baton group and shows it at work: three members
// share twelve syncs, one member crashes and its syncs fail over, a sync is
// added and another removed, and a member leaves gracefully.
//
//	go run ./examples/quickstart                       # on an embedded etcd
//	go run ./examples/quickstart -endpoints 127.0.0.1:2379
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/baton-go/baton/assignment"
	"github.com/baton-go/baton/coordinator"
	"github.com/baton-go/baton/internal/demoenv"
)

func main() {
	endpoints := flag.String("endpoints", "", "comma-separated etcd endpoints; empty starts an embedded etcd")
	flag.Parse()
	if err := run(*endpoints); err != nil {
		fmt.Fprintln(os.Stderr, "quickstart:", err)
		os.Exit(1)
	}
}

var start = time.Now()

// say prints one event line with the time since start.
func say(format string, args ...any) {
	fmt.Printf("[%6.2fs] %s\n", time.Since(start).Seconds(), fmt.Sprintf(format, args...))
}

func run(endpoints string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Second)
	defer cancel()

	eps, isEmbedded, stop, err := demoenv.Etcd(endpoints)
	if err != nil {
		return err
	}
	defer stop()
	if isEmbedded {
		say("embedded etcd at %s", strings.Join(eps, ","))
	} else {
		say("using etcd at %s", endpoints)
	}
	newClient := func() (*clientv3.Client, error) { return demoenv.Client(eps) }

	admin, err := newClient()
	if err != nil {
		return err
	}
	defer admin.Close()
	group := demoenv.Group("quickstart")
	store := coordinator.NewSyncStore(admin, group)
	for i := 1; i <= 12; i++ {
		spec := fmt.Sprintf(`{"source":"db-%02d","table":"orders"}`, i)
		if err := store.Put(ctx, assignment.Sync{ID: fmt.Sprintf("sync-%02d", i), Spec: []byte(spec)}); err != nil {
			return err
		}
	}
	say("group %s: 12 syncs stored", group)

	// Three members, each with its own client as separate processes would
	// have. The handler prints each ownership change.
	const ttl = 2 * time.Second
	members := map[string]*coordinator.Coordinator{}
	clients := map[string]*clientv3.Client{}
	var mu sync.Mutex
	running := map[string]string{} // sync -> member, as the handlers see it
	runningCount := func() int {
		mu.Lock()
		defer mu.Unlock()
		return len(running)
	}
	for _, id := range []string{"member-a", "member-b", "member-c"} {
		cli, err := newClient()
		if err != nil {
			return err
		}
		h := coordinator.HandlerFuncs{
			Assign: func(_ context.Context, c *assignment.Claim) error {
				mu.Lock()
				running[c.ID()] = id
				mu.Unlock()
				say("%-8s  starts  %s (token %d)", id, c.ID(), c.Token())
				return nil
			},
			Revoke: func(_ context.Context, c *assignment.Claim, why assignment.RevokeReason) {
				mu.Lock()
				delete(running, c.ID())
				mu.Unlock()
				say("%-8s  stops   %s (%s)", id, c.ID(), why)
			},
		}
		co, err := coordinator.New(cli, group, h, coordinator.WithMemberID(id), coordinator.WithTTL(ttl))
		if err != nil {
			return err
		}
		if err := co.Join(ctx); err != nil {
			return err
		}
		mu.Lock()
		members[id], clients[id] = co, cli
		mu.Unlock()
		say("%s joined", id)
	}
	defer func() {
		for _, cli := range clients {
			cli.Close()
		}
	}()

	st, err := waitSettled(ctx, admin, group, runningCount, 12, 3)
	if err != nil {
		return err
	}
	leader := st.Leader
	say("all 12 syncs owned; leader is %s", leader)
	printTable(st)

	// A crash: close member-c's client without a goodbye. Its lease stays
	// in etcd until the TTL runs out; only then can others take its syncs.
	victim := "member-c"
	if victim == leader {
		victim = "member-b"
	}
	say("%s crashes: its etcd client is closed, no goodbye; its lease expires in %v", victim, ttl)
	say("(in-process, the member still stops its own work: the 'shutdown' lines)")
	crashed := time.Now()
	clients[victim].Close()
	<-members[victim].Done()
	delete(members, victim)
	delete(clients, victim)
	if st, err = waitSettled(ctx, admin, group, runningCount, 12, 2); err != nil {
		return err
	}
	say("failover done: every sync owned again %.2fs after the crash", time.Since(crashed).Seconds())
	printTable(st)

	say("admin adds sync-13")
	if err := store.Put(ctx, assignment.Sync{ID: "sync-13", Spec: []byte(`{"source":"db-13"}`)}); err != nil {
		return err
	}
	if _, err = waitSettled(ctx, admin, group, runningCount, 13, 2); err != nil {
		return err
	}
	say("admin removes sync-05")
	if err := store.Delete(ctx, "sync-05"); err != nil {
		return err
	}
	if st, err = waitSettled(ctx, admin, group, runningCount, 12, 2); err != nil {
		return err
	}
	printTable(st)

	var leaver string
	for id := range members {
		if id != st.Leader {
			leaver = id
		}
	}
	say("%s leaves gracefully (drain, then hand over)", leaver)
	left := time.Now()
	if err := members[leaver].Leave(ctx); err != nil {
		return err
	}
	delete(members, leaver)
	say("%s left in %.2fs", leaver, time.Since(left).Seconds())
	if st, err = waitSettled(ctx, admin, group, runningCount, 12, 1); err != nil {
		return err
	}
	printTable(st)

	for id, co := range members {
		if err := co.Leave(ctx); err != nil {
			return err
		}
		say("%s left", id)
	}
	say("done")
	return nil
}

// waitSettled polls Describe until nsyncs syncs are owned by nmembers live
// members, nothing is pending, and the handlers run exactly nsyncs syncs.
func waitSettled(ctx context.Context, cli *clientv3.Client, group string, running func() int, nsyncs, nmembers int) (*coordinator.GroupStatus, error) {
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		st, err := coordinator.Describe(ctx, cli, group)
		if err == nil && len(st.Syncs) == nsyncs && len(st.Members) == nmembers && st.Pending == 0 && running() == nsyncs {
			return st, nil
		}
		select {
		case <-ctx.Done():
			return st, fmt.Errorf("group did not settle on %d syncs and %d members: %w", nsyncs, nmembers, ctx.Err())
		case <-tick.C:
		}
	}
}

// printTable prints who owns what.
func printTable(st *coordinator.GroupStatus) {
	tw := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "           member\tsyncs\towned")
	for _, m := range st.Members {
		var ids []string
		for _, s := range st.Syncs {
			if s.Owner == m.ID {
				ids = append(ids, s.ID)
			}
		}
		role := ""
		if m.ID == st.Leader {
			role = " (leader)"
		}
		fmt.Fprintf(tw, "           %s%s\t%d\t%s\n", m.ID, role, len(ids), strings.Join(ids, " "))
	}
	tw.Flush()
}
