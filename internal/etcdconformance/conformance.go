package etcdconformance

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc/status"
)

// Backend is one etcd implementation under test.
type Backend struct {
	// Name names the backend in subtest names and diffs.
	Name string
	// Run starts a fresh, empty etcd, calls f with a client of it, and cleans
	// up when f returns. A fake runs f inside a synctest bubble, so f must not
	// depend on real time. Run may call t.Fatal.
	Run func(t *testing.T, f func(t *testing.T, e Env))
}

// Env is what a scenario gets.
type Env struct {
	// Client is a client of the etcd under test.
	Client *clientv3.Client
	// LoseLeader, when not nil, makes the etcd lose its raft leader until the
	// returned func is called (to test WithRequireLeader watches). Scenarios
	// that need it are skipped when nil. Both calls return only when the
	// change is visible to Client's requests.
	LoseLeader func() (restore func())
}

// Scenario is one deterministic sequence of client calls. Run records what
// it observes in the transcript and fails t where the outcome is one every
// correct etcd must produce.
type Scenario struct {
	// Name names the scenario's subtest.
	Name string
	// Run drives e.Client through the scenario. The store is fresh; the
	// transcript's revisions count from its revision at the start.
	Run func(t *testing.T, e Env, tr *Transcript)
}

// Scenarios returns every scenario of the suite, in a fixed order. Scenarios
// need a fresh store, must run one at a time, and wait for real time only
// where etcd's behaviour depends on it (lease expiry and keepalive, about
// five seconds in all).
func Scenarios() []Scenario {
	var all []Scenario
	all = append(all, kvScenarios()...)
	all = append(all, txnScenarios()...)
	all = append(all, leaseScenarios()...)
	all = append(all, watchScenarios()...)
	all = append(all, concurrencyScenarios()...)
	return all
}

// Check runs every scenario on each backend, each run in a subtest
// "<scenario>/<backend>", and fails if two transcripts of the same scenario
// differ, printing a line diff. With one backend it just runs them. A run
// that failed or was skipped is left out of the comparison. Each run logs
// its transcript (seen with go test -v).
func Check(t *testing.T, backends ...Backend) {
	t.Helper()
	for _, sc := range Scenarios() {
		t.Run(sc.Name, func(t *testing.T) {
			var names []string
			var transcripts [][]string
			for _, b := range backends {
				var lines []string
				ok := t.Run(b.Name, func(t *testing.T) {
					b.Run(t, func(t *testing.T, e Env) {
						tr := newTranscript(t, e.Client)
						sc.Run(t, e, tr)
						lines = tr.Lines()
						t.Logf("transcript:\n%s", strings.Join(lines, "\n"))
					})
				})
				if ok && lines != nil {
					names = append(names, b.Name)
					transcripts = append(transcripts, lines)
				}
			}
			for i := 1; i < len(transcripts); i++ {
				if !slices.Equal(transcripts[0], transcripts[i]) {
					t.Errorf("transcripts differ (-%s +%s):\n%s", names[0], names[i], lineDiff(transcripts[0], transcripts[i]))
				}
			}
		})
	}
}

// Transcript records a scenario's normalized observations: revisions
// relative to the revision the store had when the scenario started, lease
// IDs as ordinals in order of first mention (L1, L2…), errors by kind. It
// never holds cluster or member IDs, raft terms or wall-clock durations.
// Its methods may be called from any goroutine.
type Transcript struct {
	mu     sync.Mutex
	base   int64
	leases map[clientv3.LeaseID]string
	lines  []string
}

// newTranscript reads the store's current revision as the base of the
// scenario's relative revisions.
func newTranscript(t *testing.T, cli *clientv3.Client) *Transcript {
	t.Helper()
	resp, err := cli.Get(timeout(t), "conformance-base")
	if err != nil {
		t.Fatalf("read base revision: %v", err)
	}
	return &Transcript{base: resp.Header.Revision, leases: map[clientv3.LeaseID]string{}}
}

// Logf records one line.
func (tr *Transcript) Logf(format string, args ...any) {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	tr.lines = append(tr.lines, fmt.Sprintf(format, args...))
}

// Lines returns the lines recorded so far.
func (tr *Transcript) Lines() []string {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	return slices.Clone(tr.lines)
}

// Rev formats a revision relative to the scenario's base as "@n"; 0, which
// etcd uses for "none" or "latest", stays "0".
func (tr *Transcript) Rev(rev int64) string {
	if rev == 0 {
		return "0"
	}
	return fmt.Sprintf("@%d", rev-tr.base)
}

// AbsRev turns a relative revision back into an absolute one, to pass to
// WithRev, Compact and the like.
func (tr *Transcript) AbsRev(rel int64) int64 { return tr.base + rel }

// Lease formats a lease ID as its ordinal ("L1" for the first ID
// formatted); 0 (no lease) is "-".
func (tr *Transcript) Lease(id clientv3.LeaseID) string {
	if id == clientv3.NoLease {
		return "-"
	}
	tr.mu.Lock()
	defer tr.mu.Unlock()
	if s, ok := tr.leases[id]; ok {
		return s
	}
	s := fmt.Sprintf("L%d", len(tr.leases)+1)
	tr.leases[id] = s
	return s
}

// Err formats an error by kind: "ok" for nil, etcd's message for an etcd
// error ("etcdserver: duplicate key given in txn request"), the context
// error's message, "grpc <code>" for other gRPC errors (their messages carry
// sizes and addresses), and the message otherwise.
func (tr *Transcript) Err(err error) string { return errKind(err) }

func errKind(err error) string {
	if err == nil {
		return "ok"
	}
	var ee rpctypes.EtcdError
	switch {
	case errors.As(err, &ee):
		return ee.Error()
	case errors.Is(err, context.Canceled):
		return context.Canceled.Error()
	case errors.Is(err, context.DeadlineExceeded):
		return context.DeadlineExceeded.Error()
	}
	if s, ok := status.FromError(err); ok {
		return "grpc " + s.Code().String()
	}
	return err.Error()
}

// kvs formats key-values in the order given, each as
// key="value"/c<create>/m<mod>/v<version>/<lease>.
func (tr *Transcript) kvs(kvs []*mvccpb.KeyValue) string {
	parts := make([]string, len(kvs))
	for i, kv := range kvs {
		parts[i] = tr.kv(kv)
	}
	return "[" + strings.Join(parts, " ") + "]"
}

// kv formats one key-value; nil is "nil".
func (tr *Transcript) kv(kv *mvccpb.KeyValue) string {
	if kv == nil {
		return "nil"
	}
	return fmt.Sprintf("%s=%q/c%s/m%s/v%d/%s", kv.Key, kv.Value, tr.Rev(kv.CreateRevision), tr.Rev(kv.ModRevision), kv.Version, tr.Lease(clientv3.LeaseID(kv.Lease)))
}

// events formats watch events in the order given.
func (tr *Transcript) events(evs []*clientv3.Event) string {
	parts := make([]string, len(evs))
	for i, ev := range evs {
		parts[i] = fmt.Sprintf("%s %s prev=%s", ev.Type, tr.kv(ev.Kv), tr.kv(ev.PrevKv))
	}
	return "[" + strings.Join(parts, ", ") + "]"
}

// getResp formats a range response: header revision, count, more and the kvs.
func (tr *Transcript) getResp(resp *clientv3.GetResponse) string {
	return fmt.Sprintf("rev=%s count=%d more=%t kvs=%s", tr.Rev(resp.Header.Revision), resp.Count, resp.More, tr.kvs(resp.Kvs))
}

// opTimeout bounds every call of a scenario; in a synctest bubble it is
// virtual time.
const opTimeout = 10 * time.Second

// timeout returns a context that ends after opTimeout or with the test.
func timeout(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), opTimeout)
	t.Cleanup(cancel)
	return ctx
}

// waitFor polls cond every 10ms until it holds, failing t after opTimeout.
// It is for states reached through goroutines of the scenario (a
// candidate's key written), not for etcd's timing.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(opTimeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// lineDiff returns a - / + diff of two line lists, by longest common
// subsequence; common lines are indented with two spaces.
func lineDiff(a, b []string) string {
	// lcs[i][j] is the LCS length of a[i:] and b[j:].
	lcs := make([][]int, len(a)+1)
	for i := range lcs {
		lcs[i] = make([]int, len(b)+1)
	}
	for i := len(a) - 1; i >= 0; i-- {
		for j := len(b) - 1; j >= 0; j-- {
			if a[i] == b[j] {
				lcs[i][j] = lcs[i+1][j+1] + 1
			} else {
				lcs[i][j] = max(lcs[i+1][j], lcs[i][j+1])
			}
		}
	}
	var sb strings.Builder
	i, j := 0, 0
	for i < len(a) || j < len(b) {
		switch {
		case i < len(a) && j < len(b) && a[i] == b[j]:
			fmt.Fprintf(&sb, "  %s\n", a[i])
			i++
			j++
		case i < len(a) && (j == len(b) || lcs[i+1][j] >= lcs[i][j+1]):
			fmt.Fprintf(&sb, "- %s\n", a[i])
			i++
		default:
			fmt.Fprintf(&sb, "+ %s\n", b[j])
			j++
		}
	}
	return sb.String()
}
