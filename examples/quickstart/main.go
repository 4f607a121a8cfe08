// Quickstart runs a small Baton group and shows it at work: three members
// share twelve syncs, one member crashes and its syncs fail over, a sync is
// added and another removed, and a member leaves gracefully.
//
//	go run ./examples/quickstart                       # on an embedded etcd
//	go run ./examples/quickstart -endpoints 127.0.0.1:2379
package main

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"io"
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
	if err := run(*endpoints, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "quickstart:", err)
		os.Exit(1)
	}
}

// run plays the demo and writes its story to out.
func run(endpoints string, out io.Writer) error {
	// mu guards out and running. The handlers write from the members'
	// goroutines, so every write to out is whole and made under mu: no
	// handler line can land inside a table. A handler changes running and
	// prints the change in one hold of mu, so a sync counted as running
	// has had its line printed.
	start := time.Now()
	var mu sync.Mutex
	running := map[string]string{} // sync -> member, as the handlers see it
	// sayLocked writes one event line, stamped with the time since start;
	// mu must be held.
	sayLocked := func(format string, args ...any) {
		fmt.Fprintf(out, "[%6.2fs] %s\n", time.Since(start).Seconds(), fmt.Sprintf(format, args...))
	}
	say := func(format string, args ...any) {
		mu.Lock()
		defer mu.Unlock()
		sayLocked(format, args...)
	}
	printTable := func(st *coordinator.GroupStatus) {
		b := ownerTable(st)
		mu.Lock()
		defer mu.Unlock()
		out.Write(b)
	}
	runningCount := func() int {
		mu.Lock()
		defer mu.Unlock()
		return len(running)
	}

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
	defer func() {
		// A member still in members (after an error) stops once its
		// client closes; waiting for it means no handler writes to out
		// after run returns.
		for _, cli := range clients {
			cli.Close()
		}
		for _, co := range members {
			<-co.Done()
		}
	}()
	for _, id := range []string{"member-a", "member-b", "member-c"} {
		cli, err := newClient()
		if err != nil {
			return err
		}
		clients[id] = cli
		h := coordinator.HandlerFuncs{
			Assign: func(_ context.Context, c *assignment.Claim) error {
				mu.Lock()
				defer mu.Unlock()
				running[c.ID()] = id
				sayLocked("%-8s  starts  %s (token %d)", id, c.ID(), c.Token())
				return nil
			},
			Revoke: func(_ context.Context, c *assignment.Claim, why assignment.RevokeReason) {
				mu.Lock()
				defer mu.Unlock()
				delete(running, c.ID())
				sayLocked("%-8s  stops   %s (%s)", id, c.ID(), why)
			},
		}
		co, err := coordinator.New(cli, group, h, coordinator.WithMemberID(id), coordinator.WithTTL(ttl))
		if err != nil {
			return err
		}
		if err := co.Join(ctx); err != nil {
			return err
		}
		members[id] = co
		say("%s joined", id)
	}

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
// members, the plan gives each of them syncs, nothing is pending, and the
// handlers run exactly nsyncs syncs.
func waitSettled(ctx context.Context, cli *clientv3.Client, group string, running func() int, nsyncs, nmembers int) (*coordinator.GroupStatus, error) {
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		st, err := coordinator.Describe(ctx, cli, group)
		if err == nil && len(st.Syncs) == nsyncs && len(st.Members) == nmembers && st.Pending == 0 && planCoversAll(st) && running() == nsyncs {
			return st, nil
		}
		select {
		case <-ctx.Done():
			return st, fmt.Errorf("group did not settle on %d syncs and %d members: %w", nsyncs, nmembers, ctx.Err())
		case <-tick.C:
		}
	}
}

// planCoversAll reports whether the plan gives every live member syncs.
// Nothing pending alone is not enough: a plan made before the last member
// joined has nothing pending too once its syncs run, and only the member
// it left out gives it away. With more syncs than members, the balanced
// plan leaves no member out.
func planCoversAll(st *coordinator.GroupStatus) bool {
	for _, m := range st.Members {
		if m.Targeted == 0 {
			return false
		}
	}
	return true
}

// ownerTable returns a table of who owns what, for one write.
func ownerTable(st *coordinator.GroupStatus) []byte {
	var b bytes.Buffer
	tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
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
	return b.Bytes()
}
