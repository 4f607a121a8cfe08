package chaos_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/baton-go/baton/assignment"
	"github.com/baton-go/baton/coordinator"
	"github.com/baton-go/baton/internal/chaos"
	"github.com/baton-go/baton/internal/etcdtest"
	"github.com/baton-go/baton/internal/recorder"
)

// TestProcesses runs the members as OS processes (./worker) against three
// real etcd processes, and injects what only processes can suffer: kill -9
// of a member, kill -9 of the etcd leader, SIGSTOP of a member for longer
// than its TTL, and a rolling restart of every member with stable IDs.
//
// Each worker records its ownership intervals (recorder.WithSink) and a
// fenced log: every owned sync writes a checkpoint every 50ms, and each
// attempt is logged with its outcome. The proof has two parts:
//
//   - The intervals of all processes, merged, never overlap and their tokens
//     only grow. A killed process cannot end its intervals; they end at the
//     instant it was reaped (recorder.EndMember), after which it cannot act.
//
//   - A paused process cannot end its intervals either, and unlike a killed
//     one it acts again when it resumes: it ends them late, after another
//     member took the syncs over. For that member the fenced log decides:
//     every write it attempted after it was stopped must have failed
//     (SaveCheckpoint said ErrNotOwner, and a write guarded by etcd alone
//     was refused by etcd), so whatever it did after the stop had no effect
//     outside the process, and its intervals open at the stop are cut at
//     the stop instant before the overlap check. That cut is sound only
//     because the log shows no write of those tokens succeeding later.
//     Independently of any clock, etcd's own history of the checkpoint keys
//     must show, per sync, tokens that never go down: no write of an old
//     owner lands after a new owner's.
func TestProcesses(t *testing.T) {
	pc := etcdtest.StartProcessCluster(t, 3)
	bin := buildWorker(t)
	p := &procs{t: t, pc: pc, bin: bin, dir: t.TempDir(), group: "procs", ttl: 3 * time.Second, settle: 100 * time.Millisecond}
	p.admin = pc.Client(t)
	defer p.dumpOnFailure()
	t.Cleanup(p.killAll)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	store := coordinator.NewSyncStore(p.admin, p.group)
	const nSyncs = 12
	var syncs []string
	for i := range nSyncs {
		id := fmt.Sprintf("p%02d", i)
		syncs = append(syncs, id)
		if err := store.Put(ctx, assignment.Sync{ID: id, Spec: []byte(`{"v":1}`)}); err != nil {
			t.Fatal(err)
		}
	}
	members := []string{"w1", "w2", "w3"}
	for _, m := range members {
		p.start(m)
	}
	p.waitBalanced(members, nSyncs, 30*time.Second)
	bound := recoveryBound(config{ttl: p.ttl, settle: p.settle}) + slack

	// kill -9 of a member that does not lead.
	leader := p.leader()
	victim := members[0]
	if victim == leader {
		victim = members[1]
	}
	t0 := time.Now()
	p.kill9(victim)
	d := p.waitBalanced(without(members, victim), nSyncs, 30*time.Second)
	p.note("kill -9 of %s: its syncs owned elsewhere after %v", victim, d.Round(time.Millisecond))
	if time.Since(t0) > bound {
		t.Errorf("kill -9 failover took %v; bound %v", time.Since(t0), bound)
	}
	p.failovers = append(p.failovers, "kill -9: "+time.Since(t0).Round(time.Millisecond).String())
	p.start(victim)
	p.waitBalanced(members, nSyncs, 30*time.Second)

	// kill -9 of the etcd leader: members know every etcd member, so
	// nothing moves (a 3s TTL rides through etcd's election, which takes up
	// to twice its 500ms election timeout).
	before := p.owners()
	lead, err := pc.Leader(ctx)
	if err != nil {
		t.Fatal(err)
	}
	p.note("kill -9 of etcd p%d, the raft leader", lead)
	pc.Kill(lead)
	time.Sleep(2 * p.ttl) // let leases and watches ride through the election
	if _, err := pc.Leader(ctx); err != nil {
		t.Fatal(err)
	}
	p.waitBalanced(members, nSyncs, 30*time.Second)
	if after := p.owners(); !maps.Equal(before, after) {
		t.Errorf("syncs moved when the etcd leader was killed: before %v, after %v", before, after)
	}
	pc.Restart(lead)
	p.note("etcd p%d restarted", lead)

	// SIGSTOP of the Baton leader for longer than its TTL: the others take
	// over; when it resumes it is a zombie whose fenced writes must fail.
	zombie := p.leader()
	zi := p.current(zombie)
	p.sigstop(zi)
	t0 = time.Now()
	d = p.waitBalanced(without(members, zombie), nSyncs, 30*time.Second)
	p.note("SIGSTOP of %s: its syncs owned elsewhere after %v", zombie, d.Round(time.Millisecond))
	p.failovers = append(p.failovers, "SIGSTOP of the leader: "+time.Since(t0).Round(time.Millisecond).String())
	if time.Since(t0) > bound {
		t.Errorf("failover from a paused leader took %v; bound %v", time.Since(t0), bound)
	}
	// Let the new owners write a few checkpoints before the zombie wakes.
	time.Sleep(300 * time.Millisecond)
	p.sigcont(zi)
	p.waitBalanced(members, nSyncs, 30*time.Second)

	// Rolling restart with stable IDs.
	for _, m := range members {
		p.term(p.current(m))
		p.start(m)
		p.waitBalanced(members, nSyncs, 30*time.Second)
	}
	for _, m := range members {
		p.term(p.current(m))
	}

	p.check(ctx, syncs)
}

// procs runs worker processes and keeps what they leave behind.
type procs struct {
	t      *testing.T
	pc     *etcdtest.ProcessCluster
	admin  *clientv3.Client
	bin    string
	dir    string
	group  string
	ttl    time.Duration
	settle time.Duration

	mu        sync.Mutex
	incs      []*incarnation // in start order
	timeline  []string
	failovers []string
	start0    time.Time
}

// incarnation is one process of a member ID.
type incarnation struct {
	member    string
	n         int
	cmd       *exec.Cmd
	done      chan struct{}
	intervals string
	fenced    string
	log       string
	out       string
	killedAt  int64 // recorder.Now() once it was reaped after kill -9
	stoppedAt int64 // recorder.Now() once it was seen stopped by SIGSTOP
	contAt    int64 // recorder.Now() just before SIGCONT
}

func buildWorker(t *testing.T) string {
	t.Helper()
	_, file, _, _ := runtime.Caller(0)
	out := filepath.Join(t.TempDir(), "worker")
	args := []string{"build", "-o", out}
	if raceEnabled {
		args = append(args, "-race")
	}
	cmd := exec.Command("go", append(args, "./worker")...)
	cmd.Dir = filepath.Dir(file)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build ./worker: %v\n%s", err, b)
	}
	return out
}

func (p *procs) note(format string, args ...any) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.start0.IsZero() {
		p.start0 = time.Now()
	}
	p.timeline = append(p.timeline, fmt.Sprintf("%8.3fs %s", time.Since(p.start0).Seconds(), fmt.Sprintf(format, args...)))
}

func (p *procs) start(member string) *incarnation {
	p.t.Helper()
	p.mu.Lock()
	n := 0
	for _, inc := range p.incs {
		if inc.member == member {
			n++
		}
	}
	base := filepath.Join(p.dir, fmt.Sprintf("%s.%d", member, n))
	inc := &incarnation{member: member, n: n, done: make(chan struct{}),
		intervals: base + ".intervals", fenced: base + ".fenced", log: base + ".log", out: base + ".out"}
	p.incs = append(p.incs, inc)
	p.mu.Unlock()
	out, err := os.Create(inc.out)
	if err != nil {
		p.t.Fatal(err)
	}
	defer out.Close()
	inc.cmd = exec.Command(p.bin,
		"-endpoints", strings.Join(p.pc.Endpoints(), ","), "-group", p.group, "-id", member,
		"-ttl", p.ttl.String(), "-settle", p.settle.String(),
		"-intervals", inc.intervals, "-fenced", inc.fenced, "-log", inc.log)
	inc.cmd.Stdout, inc.cmd.Stderr = out, out
	inc.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := inc.cmd.Start(); err != nil {
		p.t.Fatal(err)
	}
	go func() {
		_ = inc.cmd.Wait()
		close(inc.done)
	}()
	p.note("started %s (process %d, pid %d)", member, n, inc.cmd.Process.Pid)
	return inc
}

// current is the running process of member.
func (p *procs) current(member string) *incarnation {
	p.mu.Lock()
	defer p.mu.Unlock()
	for i := len(p.incs) - 1; i >= 0; i-- {
		if p.incs[i].member == member {
			return p.incs[i]
		}
	}
	p.t.Fatalf("no process of %s", member)
	return nil
}

func (p *procs) kill9(member string) {
	inc := p.current(member)
	_ = inc.cmd.Process.Signal(syscall.SIGKILL)
	<-inc.done
	inc.killedAt = recorder.Now()
	p.note("kill -9 of %s", member)
}

// term asks the process to leave (SIGTERM) and waits for a clean exit.
func (p *procs) term(inc *incarnation) {
	p.t.Helper()
	_ = inc.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-inc.done:
	case <-time.After(60 * time.Second):
		p.t.Fatalf("%s did not exit within 60s of SIGTERM", inc.member)
	}
	if code := inc.cmd.ProcessState.ExitCode(); code != 0 {
		p.t.Errorf("%s (process %d) exited with %d", inc.member, inc.n, code)
	}
	p.note("%s left (SIGTERM)", inc.member)
}

func (p *procs) sigstop(inc *incarnation) {
	p.t.Helper()
	pid := inc.cmd.Process.Pid
	if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
		p.t.Fatal(err)
	}
	// The process stops acting when the kernel has stopped every thread;
	// only then is the stop instant taken.
	deadline := time.Now().Add(10 * time.Second)
	for !stopped(pid) {
		if time.Now().After(deadline) {
			p.t.Fatalf("%s not stopped 10s after SIGSTOP", inc.member)
		}
		time.Sleep(time.Millisecond)
	}
	inc.stoppedAt = recorder.Now()
	p.note("SIGSTOP of %s", inc.member)
}

// stopped reports whether every thread of pid is in state T (stopped).
func stopped(pid int) bool {
	tasks, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	if err != nil || len(tasks) == 0 {
		return false
	}
	for _, task := range tasks {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/stat", pid, task.Name()))
		if err != nil {
			return false
		}
		// pid (comm) state ...: comm may hold spaces, so look after the last ')'.
		i := bytes.LastIndexByte(b, ')')
		if i < 0 || i+2 >= len(b) || b[i+2] != 'T' {
			return false
		}
	}
	return true
}

func (p *procs) sigcont(inc *incarnation) {
	inc.contAt = recorder.Now()
	_ = syscall.Kill(inc.cmd.Process.Pid, syscall.SIGCONT)
	p.note("SIGCONT of %s", inc.member)
}

func (p *procs) killAll() {
	p.mu.Lock()
	incs := slices.Clone(p.incs)
	p.mu.Unlock()
	for _, inc := range incs {
		if inc.cmd != nil && inc.cmd.Process != nil {
			_ = inc.cmd.Process.Signal(syscall.SIGKILL)
			_ = syscall.Kill(inc.cmd.Process.Pid, syscall.SIGCONT)
			<-inc.done
		}
	}
}

// owners reads who owns each sync with which token, from etcd.
func (p *procs) owners() map[string]string {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	st, err := coordinator.Describe(ctx, p.admin, p.group)
	if err != nil {
		p.t.Fatalf("describe: %v", err)
	}
	out := map[string]string{}
	for _, s := range st.Syncs {
		out[s.ID] = fmt.Sprintf("%s@%d", s.Owner, s.Token)
	}
	return out
}

func (p *procs) leader() string {
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		st, err := coordinator.Describe(ctx, p.admin, p.group)
		cancel()
		if err == nil && st.Leader != "" {
			return st.Leader
		}
		time.Sleep(50 * time.Millisecond)
	}
	p.t.Fatal("no Baton leader after 30s")
	return ""
}

// waitBalanced waits until exactly members are registered, every sync is
// owned by one of them where the plan wants it, and the loads differ by at
// most one; it returns how long that took.
func (p *procs) waitBalanced(members []string, n int, limit time.Duration) time.Duration {
	p.t.Helper()
	start := time.Now()
	var why string
	for time.Since(start) < limit {
		why = p.balanced(members, n)
		if why == "" {
			return time.Since(start)
		}
		time.Sleep(50 * time.Millisecond)
	}
	p.t.Fatalf("not balanced on %v after %v: %s", members, limit, why)
	return 0
}

func (p *procs) balanced(members []string, n int) string {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	st, err := coordinator.Describe(ctx, p.admin, p.group)
	if err != nil {
		return err.Error()
	}
	var live []string
	for _, m := range st.Members {
		live = append(live, m.ID)
	}
	slices.Sort(live)
	want := slices.Sorted(slices.Values(members))
	if !slices.Equal(live, want) {
		return fmt.Sprintf("members %v", live)
	}
	if len(st.Syncs) != n || st.Pending != 0 {
		return fmt.Sprintf("%d syncs, %d pending", len(st.Syncs), st.Pending)
	}
	lo, hi := n, 0
	for _, m := range st.Members {
		lo, hi = min(lo, m.Owned), max(hi, m.Owned)
	}
	if hi-lo > 1 {
		return fmt.Sprintf("unbalanced: %+v", st.Members)
	}
	return ""
}

func without(ids []string, drop string) []string {
	return slices.DeleteFunc(slices.Clone(ids), func(s string) bool { return s == drop })
}

// recorderEvent is a line of a recorder sink (recorder.WithSink).
type recorderEvent struct {
	Op     string `json:"op"`
	Member string `json:"member"`
	Sync   string `json:"sync"`
	Token  int64  `json:"token"`
	T      int64  `json:"t"`
}

// check merges every process's record and checks it against the fenced
// logs and etcd's history.
func (p *procs) check(ctx context.Context, syncs []string) {
	t := p.t
	var recs []*recorder.Recorder
	var writes []chaos.Write
	zombieWrites, zombieRefused := 0, 0
	for _, inc := range p.incs {
		ws, err := chaos.ReadLog(inc.fenced)
		if err != nil {
			t.Fatal(err)
		}
		writes = append(writes, ws...)
		lines, err := os.ReadFile(inc.intervals)
		if err != nil {
			t.Fatal(err)
		}
		if inc.stoppedAt != 0 {
			var n, refused int
			lines, n, refused = p.cutAtStop(inc, lines, ws)
			zombieWrites += n
			zombieRefused += refused
		}
		r, err := recorder.Read(bytes.NewReader(lines))
		if err != nil {
			t.Fatalf("%s: %v", inc.intervals, err)
		}
		if inc.killedAt != 0 {
			n := r.EndMember(inc.member, inc.killedAt)
			p.note("%s (process %d) killed owning %d syncs", inc.member, inc.n, n)
		}
		recs = append(recs, r)
	}
	merged := recorder.Merge(recs...)
	if err := merged.Check(); err != nil {
		t.Errorf("merged intervals of all processes: %v", err)
	}
	if open := merged.Owners(); len(open) != 0 {
		t.Errorf("intervals left open: %v", open)
	}
	if zombieWrites == 0 {
		t.Errorf("the paused member attempted no write after it resumed; the fencing was not exercised")
	}
	if zombieRefused == 0 {
		t.Errorf("no write of the paused member was refused by etcd itself (Claim.Guard)")
	}

	// etcd's history of the checkpoint keys, in revision order.
	hist := p.history(ctx)
	killed := map[string]bool{}
	for _, inc := range p.incs {
		if inc.killedAt != 0 {
			killed[inc.member] = true
		}
	}
	unknown, errs := matchHistory(hist, writes, killed)
	for _, err := range errs {
		t.Error(err)
	}
	for _, w := range unknown {
		p.note("%s's write %s/%d/%d failed (%s) but etcd had applied it: the answer was lost", w.Member, w.Sync, w.Token, w.Seq, w.Err)
	}
	// Every write in etcd came from the member holding that token in the
	// merged record.
	tokens := map[string]map[int64]string{}
	for _, iv := range merged.Intervals() {
		if tokens[iv.Sync] == nil {
			tokens[iv.Sync] = map[int64]string{}
		}
		tokens[iv.Sync][iv.Token] = iv.Member
	}
	total := 0
	for sync, vs := range hist {
		total += len(vs)
		for _, v := range vs {
			if m := tokens[sync][v.Token]; m != v.Member {
				t.Errorf("sync %s: write by %s with token %d, which the record gives to %q", sync, v.Member, v.Token, m)
			}
		}
	}
	for _, s := range syncs {
		if len(hist[s]) == 0 {
			t.Errorf("sync %s: no checkpoint ever written", s)
		}
	}
	t.Logf("processes: %d, intervals: %d, fenced writes in etcd: %d (%d whose answer was an error), paused member's writes after resuming: %d (%d refused by etcd); failovers: %v",
		len(p.incs), len(merged.Intervals()), total, len(unknown), zombieWrites, zombieRefused, p.failovers)
}

// matchHistory checks etcd's history of the checkpoint keys (per sync, in
// revision order) against the fenced logs of every process:
//
//   - per sync, tokens never go down, and one token's seqs only grow: no
//     write of an old owner lands after a new owner's;
//   - every write logged as done is in the history;
//   - no write logged as refused (ErrNotOwner, or a guard that failed) is:
//     a refusal promises that nothing was written;
//   - a write in the history whose attempt was logged with another error
//     (a timeout, a lost connection) is allowed: etcd applied it but the
//     answer never came back, as when a process is paused with the request
//     in flight. It is returned in unknown;
//   - a write in the history that no log holds at all is allowed only from
//     a killed process (its last write of a sync, made before it could log
//     it), and only once per sync and token.
func matchHistory(hist map[string][]chaos.Value, writes []chaos.Write, killed map[string]bool) (unknown []chaos.Write, errs []error) {
	type wkey struct {
		sync   string
		member string
		token  int64
		seq    int64
	}
	inHistory := map[wkey]bool{}
	for _, sync := range slices.Sorted(maps.Keys(hist)) {
		vs := hist[sync]
		for i, v := range vs {
			inHistory[wkey{sync, v.Member, v.Token, v.Seq}] = true
			if i == 0 {
				continue
			}
			switch last := vs[i-1]; {
			case v.Token < last.Token:
				errs = append(errs, fmt.Errorf("sync %s: etcd took a write of token %d (%s) after one of token %d (%s): an old owner wrote after a new one", sync, v.Token, v.Member, last.Token, last.Member))
			case v.Token == last.Token && v.Seq <= last.Seq:
				errs = append(errs, fmt.Errorf("sync %s: token %d wrote seq %d after %d", sync, v.Token, v.Seq, last.Seq))
			}
		}
	}
	attempts := map[wkey]chaos.Write{}
	for _, w := range writes {
		k := wkey{w.Sync, w.Member, w.Token, w.Seq}
		attempts[k] = w
		switch {
		case w.OK && !inHistory[k]:
			errs = append(errs, fmt.Errorf("a write logged as done is not in etcd's history: %+v", w))
		case !w.OK && w.Err == "not-owner" && inHistory[k]:
			errs = append(errs, fmt.Errorf("a write refused as not-owner is in etcd's history: %+v", w))
		}
	}
	unlogged := map[string]int{}
	for _, sync := range slices.Sorted(maps.Keys(hist)) {
		for _, v := range hist[sync] {
			w, ok := attempts[wkey{sync, v.Member, v.Token, v.Seq}]
			switch {
			case ok && !w.OK && w.Err != "not-owner":
				unknown = append(unknown, w)
			case ok:
			case !killed[v.Member]:
				errs = append(errs, fmt.Errorf("sync %s: etcd took a write %+v that no log holds", sync, v))
			default:
				k := fmt.Sprintf("%s/%s/%d", sync, v.Member, v.Token)
				if unlogged[k]++; unlogged[k] == 2 {
					errs = append(errs, fmt.Errorf("%s: more than one write taken by etcd but not logged", k))
				}
			}
		}
	}
	return unknown, errs
}

// cutAtStop ends the paused incarnation's intervals that were open when it
// was stopped at the stop instant, after checking in its fenced log that
// no write of those tokens attempted after the stop succeeded. It returns
// the rewritten record, the number of such writes and how many etcd
// refused (guard-only writes).
func (p *procs) cutAtStop(inc *incarnation, lines []byte, ws []chaos.Write) ([]byte, int, int) {
	t := p.t
	type key struct {
		sync  string
		token int64
	}
	var events []recorderEvent
	sc := bufio.NewScanner(bytes.NewReader(lines))
	for sc.Scan() {
		var e recorderEvent
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
			continue // a last line cut short
		}
		events = append(events, e)
	}
	open := map[key]bool{}
	for _, e := range events {
		if e.T > inc.stoppedAt {
			break
		}
		k := key{e.Sync, e.Token}
		open[k] = e.Op == "start"
	}
	n, refused := 0, 0
	for _, w := range ws {
		if !open[key{w.Sync, w.Token}] || w.Start <= inc.stoppedAt {
			continue
		}
		n++
		if w.OK {
			t.Errorf("the paused member's write after it resumed succeeded: %+v", w)
		}
		if w.Kind == chaos.KindCheckpoint && w.Err != "not-owner" {
			t.Errorf("SaveCheckpoint of the resumed member failed with %q, want ErrNotOwner", w.Err)
		}
		if w.Kind == chaos.KindGuard && w.Err == "not-owner" {
			refused++
		}
	}
	var out bytes.Buffer
	for _, e := range events {
		if e.Op == "end" && e.T > inc.stoppedAt && open[key{e.Sync, e.Token}] {
			p.note("%s's interval of %s (token %d) ended %v after the stop; cut at the stop", inc.member, e.Sync, e.Token, time.Duration(e.T-inc.stoppedAt).Round(time.Millisecond))
			e.T = inc.stoppedAt
		}
		b, _ := json.Marshal(e)
		out.Write(append(b, '\n'))
	}
	return out.Bytes(), n, refused
}

// history replays every put of the group's checkpoint keys, in revision
// order, per sync.
func (p *procs) history(ctx context.Context) map[string][]chaos.Value {
	t := p.t
	prefix := coordinator.DefaultPrefix + "/" + p.group + "/checkpoints/"
	// Every writer has stopped: the newest checkpoint is the last event.
	resp, err := p.admin.Get(ctx, prefix, clientv3.WithPrefix(), clientv3.WithSort(clientv3.SortByModRevision, clientv3.SortDescend), clientv3.WithLimit(1))
	if err != nil {
		t.Fatal(err)
	}
	out := map[string][]chaos.Value{}
	if len(resp.Kvs) == 0 {
		return out
	}
	end := resp.Kvs[0].ModRevision
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	for wr := range p.admin.Watch(wctx, prefix, clientv3.WithPrefix(), clientv3.WithRev(1)) {
		if err := wr.Err(); err != nil {
			t.Fatalf("replay checkpoint history: %v", err)
		}
		for _, ev := range wr.Events {
			if ev.Type != clientv3.EventTypePut {
				continue
			}
			var v chaos.Value
			if err := json.Unmarshal(ev.Kv.Value, &v); err != nil {
				t.Fatalf("checkpoint %s at %d: %v", ev.Kv.Key, ev.Kv.ModRevision, err)
			}
			sync := strings.TrimPrefix(string(ev.Kv.Key), prefix)
			out[sync] = append(out[sync], v)
			if ev.Kv.ModRevision >= end {
				return out
			}
		}
	}
	t.Fatal("checkpoint history replay ended early")
	return out
}

func (p *procs) dumpOnFailure() {
	if !p.t.Failed() && !testing.Verbose() {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.t.Logf("timeline:\n%s", strings.Join(p.timeline, "\n"))
	if !p.t.Failed() {
		return
	}
	for _, inc := range p.incs {
		for _, f := range []string{inc.out, inc.log} {
			b, _ := os.ReadFile(f)
			if len(b) > 6000 {
				b = b[len(b)-6000:]
			}
			p.t.Logf("%s:\n%s", f, b)
		}
	}
}
