package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/goleak"

	"github.com/baton-go/baton/coordinator"
	"github.com/baton-go/baton/internal/etcdtest"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, etcdtest.LeakOptions()...)
}

// ctl runs batonctl with args against endpoints and returns its stdout,
// stderr and error.
func ctl(t *testing.T, endpoints []string, args ...string) (string, string, error) {
	t.Helper()
	var out, errOut bytes.Buffer
	full := append([]string{"-endpoints", strings.Join(endpoints, ","), "-timeout", "5s"}, args...)
	err := run(context.Background(), full, &out, &errOut)
	return out.String(), errOut.String(), err
}

func mustCtl(t *testing.T, endpoints []string, args ...string) string {
	t.Helper()
	out, errOut, err := ctl(t, endpoints, args...)
	require.NoError(t, err, "batonctl %v: stderr: %s", args, errOut)
	return out
}

func status(t *testing.T, endpoints []string, group string) *coordinator.GroupStatus {
	t.Helper()
	var st coordinator.GroupStatus
	require.NoError(t, json.Unmarshal([]byte(mustCtl(t, endpoints, "-group", group, "-o", "json", "describe")), &st))
	return &st
}

// waitStatus polls describe until cond holds, for at most 15s.
func waitStatus(t *testing.T, endpoints []string, group string, what string, cond func(*coordinator.GroupStatus) bool) *coordinator.GroupStatus {
	t.Helper()
	var st *coordinator.GroupStatus
	if !etcdtest.WaitUntil(15*time.Second, func() bool { st = status(t, endpoints, group); return cond(st) }) {
		b, _ := json.MarshalIndent(st, "", "  ")
		t.Fatalf("%s: not reached; last status:\n%s", what, b)
	}
	return st
}

func member(t *testing.T, endpoints []string, group, id string) (*coordinator.Coordinator, *clientv3.Client) {
	t.Helper()
	cli := etcdtest.NewClient(t, endpoints)
	co, err := coordinator.New(cli, group, coordinator.HandlerFuncs{},
		coordinator.WithMemberID(id), coordinator.WithTTL(time.Second), coordinator.WithSettle(50*time.Millisecond))
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	require.NoError(t, co.Join(ctx))
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = co.Leave(ctx)
	})
	return co, cli
}

func TestBatonctl(t *testing.T) {
	eps := etcdtest.Embedded(t)
	const g = "orders"

	// Syncs first, through the tool.
	require.Equal(t, "created db-1\n", mustCtl(t, eps, "-group", g, "syncs", "put", "db-1", "-spec", `{"table":"a"}`))
	require.Equal(t, "created db-2\n", mustCtl(t, eps, "-group", g, "syncs", "put", "db-2", "-weight", "2", "-label", "zone=eu", "-spec", `{"table":"b"}`))
	require.Equal(t, "created db-3\n", mustCtl(t, eps, "-group", g, "syncs", "put", "-spec", `{"table":"c"}`, "db-3"))
	out := mustCtl(t, eps, "-group", g, "syncs", "put", "db-1", "-weight", "3")
	require.Equal(t, "updated db-1\n", out)
	var listed []syncJSON
	require.NoError(t, json.Unmarshal([]byte(mustCtl(t, eps, "-group", g, "-o", "json", "syncs", "list")), &listed))
	require.Len(t, listed, 3)
	require.Equal(t, "db-1", listed[0].ID)
	require.Equal(t, 3, listed[0].Weight)
	require.JSONEq(t, `{"table":"a"}`, string(listed[0].Spec), "a put without -spec keeps the stored spec")
	require.Equal(t, map[string]string{"zone": "eu"}, listed[1].Labels)
	table := mustCtl(t, eps, "-group", g, "syncs", "list")
	require.Contains(t, table, "SYNC")
	require.Contains(t, table, "zone=eu")

	// Two members run them.
	a, _ := member(t, eps, g, "member-a")
	member(t, eps, g, "member-b")
	st := waitStatus(t, eps, g, "all owned by two members", func(st *coordinator.GroupStatus) bool {
		return len(st.Members) == 2 && len(st.Syncs) == 3 && st.Pending == 0
	})
	require.Contains(t, []string{"member-a", "member-b"}, st.Leader)
	for _, s := range st.Syncs {
		require.Equal(t, s.Target, s.Owner)
		require.Positive(t, s.Token)
	}
	table = mustCtl(t, eps, "-group", g, "describe")
	for _, want := range []string{"leader " + st.Leader, "MEMBER", "member-a", "member-b", "SYNC", "TARGET", "OWNER", "TOKEN", "running", "0 pending"} {
		require.Contains(t, table, want)
	}
	t.Logf("describe:\n%s", table)

	// Drain member-a from outside: its syncs move to member-b.
	out = mustCtl(t, eps, "-group", g, "drain", "member-a")
	require.Contains(t, out, "member-a is draining")
	st = waitStatus(t, eps, g, "member-a drained", func(st *coordinator.GroupStatus) bool {
		if st.Pending != 0 || len(st.Members) != 2 {
			return false
		}
		for _, m := range st.Members {
			if m.ID == "member-a" && (!m.Draining || m.Owned != 0 || m.Targeted != 0) {
				return false
			}
		}
		return true
	})
	for _, s := range st.Syncs {
		require.Equal(t, "member-b", s.Owner)
	}
	require.Empty(t, a.Owned())
	require.Contains(t, mustCtl(t, eps, "-group", g, "describe"), "draining")
	require.Contains(t, mustCtl(t, eps, "-group", g, "drain", "member-a"), "already draining")
	// The flag stays on the member's lease: when member-a leaves, its key
	// goes, as a member key must.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	require.NoError(t, a.Leave(ctx))
	waitStatus(t, eps, g, "member-a gone", func(st *coordinator.GroupStatus) bool { return len(st.Members) == 1 })
	_, errOut, err := ctl(t, eps, "-group", g, "drain", "member-a")
	require.ErrorContains(t, err, "no such live member", errOut)

	// Delete, and an unreadable spec written by hand.
	require.Equal(t, "deleted db-3\n", mustCtl(t, eps, "-group", g, "syncs", "delete", "db-3"))
	admin := etcdtest.NewClient(t, eps)
	_, err = admin.Put(ctx, "/baton/"+g+"/syncs/broken", "{oops")
	require.NoError(t, err)
	st = waitStatus(t, eps, g, "db-3 gone, broken reported", func(st *coordinator.GroupStatus) bool {
		return len(st.Syncs) == 2 && len(st.Invalid) == 1 && st.Pending == 0
	})
	require.Equal(t, "broken", st.Invalid[0].Key)
	table = mustCtl(t, eps, "-group", g, "describe")
	require.Contains(t, table, "INVALID SPEC")
	out, errOut, err = ctl(t, eps, "-group", g, "syncs", "list")
	require.NoError(t, err)
	require.Contains(t, errOut, "broken")
	require.NotContains(t, out, "db-3")
}

func TestBatonctlUsage(t *testing.T) {
	eps := []string{"127.0.0.1:1"} // never dialed: every case fails before
	for name, args := range map[string][]string{
		"no command":       {"-group", "g"},
		"no group":         {"describe"},
		"unknown command":  {"-group", "g", "frobnicate"},
		"bad output":       {"-group", "g", "-o", "yaml", "describe"},
		"put without id":   {"-group", "g", "syncs", "put", "-weight", "2"},
		"unknown syncs op": {"-group", "g", "syncs", "rename", "a"},
		"bad label":        {"-group", "g", "syncs", "put", "a", "-label", "nokey"},
	} {
		t.Run(name, func(t *testing.T) {
			_, errOut, err := ctl(t, eps, args...)
			require.True(t, errors.Is(err, errUsage), "err %v", err)
			require.Contains(t, errOut, "usage: batonctl")
		})
	}
	for name, args := range map[string][]string{
		"bad group":   {"-group", "a/b", "describe"},
		"bad sync ID": {"-group", "g", "syncs", "put", "a b"},
		"bad member":  {"-group", "g", "drain", "../x"},
		"bad spec":    {"-group", "g", "syncs", "put", "a", "-spec", "{nope"},
	} {
		t.Run(name, func(t *testing.T) {
			_, _, err := ctl(t, eps, args...)
			require.Error(t, err)
			require.False(t, errors.Is(err, errUsage))
		})
	}
}

// TestDrainRace drains one member from several tools at once while the
// member drains itself: every write lands on the live record with the
// member's own lease, and the record keeps its other fields.
func TestDrainRace(t *testing.T) {
	eps := etcdtest.Embedded(t)
	const g = "race"
	co, cli := member(t, eps, g, "m")
	key := "/baton/" + g + "/members/m"
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	before, err := cli.Get(ctx, key)
	require.NoError(t, err)
	require.Len(t, before.Kvs, 1)

	errs := make(chan error, 9)
	outs := make(chan string, 8)
	for range 8 {
		go func() {
			out, errOut, err := ctl(t, eps, "-group", g, "drain", "m")
			if err != nil {
				err = errors.Join(err, errors.New(errOut))
			}
			outs <- out
			errs <- err
		}()
	}
	go func() { errs <- co.Drain(ctx) }()
	for range 9 {
		require.NoError(t, <-errs)
	}
	// Each tool either wrote the drain or found it written: none is lost
	// and none reports something else.
	for range 8 {
		require.Regexp(t, `^m (is draining: the leader moves its syncs away \(watch with describe\)|was already draining)\n$`, <-outs)
	}
	after, err := cli.Get(ctx, key)
	require.NoError(t, err)
	require.Len(t, after.Kvs, 1)
	require.Equal(t, before.Kvs[0].Lease, after.Kvs[0].Lease, "still on the member's lease")
	require.Equal(t, before.Kvs[0].CreateRevision, after.Kvs[0].CreateRevision, "the same registration")
	var rec map[string]any
	require.NoError(t, json.Unmarshal(after.Kvs[0].Value, &rec))
	require.Equal(t, true, rec["draining"])
	require.EqualValues(t, 1, rec["weight"])
}

// A drain written while the member is cut off, on a record its lease is
// about to take with it, must not be reported done and then lost: the tool
// waits for the member to acknowledge the drain (its own write of the
// flag), and drains the member's new registration if the old one went
// before it could. Before the fix the tool said "draining" at once and the
// member came back without the flag.
func TestDrainSurvivesTheMembersSessionLoss(t *testing.T) {
	cluster := etcdtest.NewCluster(t, 3)
	const g = "lost"
	// m reaches etcd only through member 0; the tool through 1 and 2.
	co, err := coordinator.New(cluster.ClientTo(t, 0), g, coordinator.HandlerFuncs{},
		coordinator.WithMemberID("m"), coordinator.WithTTL(time.Second), coordinator.WithSettle(50*time.Millisecond))
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	require.NoError(t, co.Join(ctx))
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = co.Leave(ctx)
	})
	tool := []string{cluster.Endpoint(1), cluster.Endpoint(2)}
	waitStatus(t, tool, g, "m registered", func(st *coordinator.GroupStatus) bool { return len(st.Members) == 1 })

	cluster.Blackhole(0)
	cluster.DropConnections(0)
	type result struct {
		out, errOut string
		err         error
	}
	drained := make(chan result, 1)
	go func() {
		var out, errOut bytes.Buffer
		err := run(context.Background(), []string{"-endpoints", strings.Join(tool, ","), "-timeout", "30s", "-group", g, "drain", "m"}, &out, &errOut)
		drained <- result{out.String(), errOut.String(), err}
	}()
	waitStatus(t, tool, g, "m's lease expired", func(st *coordinator.GroupStatus) bool { return len(st.Members) == 0 })
	cluster.Unblackhole(0)
	select {
	case r := <-drained:
		require.NoError(t, r.err, "stderr: %s", r.errOut)
		require.Equal(t, "m is draining: the leader moves its syncs away (watch with describe)\n", r.out)
	case <-time.After(40 * time.Second):
		t.Fatal("the drain did not return")
	}
	waitStatus(t, tool, g, "m back and draining", func(st *coordinator.GroupStatus) bool {
		return len(st.Members) == 1 && st.Members[0].Draining
	})
}

// A member key whose value is JSON null (written by hand) is not a member
// record: the tool says so. Before the fix it panicked (nil map).
func TestDrainOfANullMemberRecord(t *testing.T) {
	eps := etcdtest.Embedded(t)
	cli := etcdtest.NewClient(t, eps)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	lease, err := cli.Grant(ctx, 30)
	require.NoError(t, err)
	_, err = cli.Put(ctx, "/baton/nul/members/x", "null", clientv3.WithLease(lease.ID))
	require.NoError(t, err)
	out, _, err := ctl(t, eps, "-group", "nul", "drain", "x")
	require.ErrorContains(t, err, "/baton/nul/members/x is not a member record")
	require.Empty(t, out, "no drain reported")
}
