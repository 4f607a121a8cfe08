package etcdtest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

var etcdBuild struct {
	once sync.Once
	path string
	err  error
}

// BuildEtcd builds the etcd server at the version in go.mod (the program in
// internal/etcdtest/etcdmain) and returns the binary's path. It builds once
// per test binary; go's build cache makes later test binaries fast. The
// binary is shared by all test binaries of the user, in
// $TMPDIR/baton-etcdtest-<uid>.
func BuildEtcd(t testing.TB) string {
	t.Helper()
	etcdBuild.once.Do(func() {
		etcdBuild.path, etcdBuild.err = buildEtcd()
	})
	if etcdBuild.err != nil {
		t.Fatalf("etcdtest: build etcd: %v", etcdBuild.err)
	}
	return etcdBuild.path
}

func buildEtcd() (string, error) {
	_, file, _, ok := runtime.Caller(0)
	if !ok {
		return "", errors.New("cannot locate the etcdtest source directory")
	}
	srcDir := filepath.Join(filepath.Dir(file), "etcdmain")
	outDir := filepath.Join(os.TempDir(), "baton-etcdtest-"+strconv.Itoa(os.Getuid()))
	if err := os.MkdirAll(outDir, 0o755); err != nil {
		return "", err
	}
	goBin, err := exec.LookPath("go")
	if err != nil {
		return "", fmt.Errorf("etcdtest: go not on PATH: %w", err)
	}
	// go build writes the binary into a private directory and renames it
	// into place, so test binaries building at once never see a partial
	// file, and a running etcd keeps its (unlinked) old file.
	out := filepath.Join(outDir, "etcd")
	cmd := exec.Command(goBin, "build", "-o", out, ".")
	cmd.Dir = srcDir
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("go build in %s: %w\n%s", srcDir, err, stderr.String())
	}
	return out, nil
}

// ProcessCluster is a cluster of real etcd processes on loopback TCP ports.
// Its methods are safe for concurrent use.
type ProcessCluster struct {
	t      testing.TB
	bin    string
	token  string
	procs  []*etcdProcess
	mu     sync.Mutex
	closed bool
}

type etcdProcess struct {
	name      string
	dataDir   string
	logPath   string
	clientURL string
	peerURL   string
	cmd       *exec.Cmd
	done      chan struct{} // closed when cmd has exited

}

// Process cluster timing: a 50ms heartbeat and a 500ms election timeout fail
// over within about a second and still grant 1s lease TTLs (etcd's floor is
// 1.5 × the election timeout).
const (
	processHeartbeatMs = 50
	processElectionMs  = 500
)

// StartProcessCluster starts n etcd processes (see [BuildEtcd]) forming one
// cluster, with data in t.TempDir() and fsync off (a killed process loses
// nothing; only a machine crash would). It returns once the cluster has a
// leader and serves writes. All processes are killed when t ends; their logs
// are printed if t failed.
func StartProcessCluster(t testing.TB, n int) *ProcessCluster {
	t.Helper()
	if n < 1 {
		t.Fatalf("etcdtest: cluster size %d, want at least 1", n)
	}
	bin := BuildEtcd(t)
	base := t.TempDir()
	var lastErr error
	// A free port picked here may be taken by someone else before etcd
	// listens on it; then etcd exits and the cluster starts over.
	for attempt := range 3 {
		pc := &ProcessCluster{t: t, bin: bin, token: fmt.Sprintf("baton-%d-%d", os.Getpid(), time.Now().UnixNano())}
		dir := filepath.Join(base, fmt.Sprintf("attempt%d", attempt))
		if lastErr = pc.start(dir, n); lastErr == nil {
			t.Cleanup(pc.close)
			return pc
		}
		pc.dumpLogs()
		pc.close()
	}
	t.Fatalf("etcdtest: start %d etcd processes: %v", n, lastErr)
	return nil
}

func (pc *ProcessCluster) start(dir string, n int) error {
	ports, err := freePorts(2 * n)
	if err != nil {
		return err
	}
	var initial []string
	for i := range n {
		p := &etcdProcess{
			name:      fmt.Sprintf("p%d", i),
			dataDir:   filepath.Join(dir, fmt.Sprintf("p%d", i)),
			logPath:   filepath.Join(dir, fmt.Sprintf("p%d.log", i)),
			clientURL: fmt.Sprintf("http://127.0.0.1:%d", ports[2*i]),
			peerURL:   fmt.Sprintf("http://127.0.0.1:%d", ports[2*i+1]),
		}
		pc.procs = append(pc.procs, p)
		initial = append(initial, p.name+"="+p.peerURL)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	for _, p := range pc.procs {
		if err := pc.launch(p, strings.Join(initial, ",")); err != nil {
			return err
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	return pc.waitWritable(ctx)
}

func freePorts(n int) ([]int, error) {
	ports := make([]int, 0, n)
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("pick a free port: %w", err)
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

func (pc *ProcessCluster) launch(p *etcdProcess, initialCluster string) error {
	logFile, err := os.OpenFile(p.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer logFile.Close() // the child has its own descriptor
	cmd := exec.Command(pc.bin,
		"--name", p.name,
		"--data-dir", p.dataDir,
		"--listen-client-urls", p.clientURL,
		"--advertise-client-urls", p.clientURL,
		"--listen-peer-urls", p.peerURL,
		"--initial-advertise-peer-urls", p.peerURL,
		"--initial-cluster", initialCluster,
		"--initial-cluster-token", pc.token,
		"--initial-cluster-state", "new",
		"--heartbeat-interval", strconv.Itoa(processHeartbeatMs),
		"--election-timeout", strconv.Itoa(processElectionMs),
		"--grpc-keepalive-min-time", "100ms",
		"--unsafe-no-fsync",
		"--logger", "zap",
		"--log-level", "warn",
		"--log-outputs", "stderr",
	)
	cmd.Stdout = logFile
	cmd.Stderr = logFile
	cmd.Env = withoutEnv(os.Environ(), "ETCD_")
	// If the test binary dies, its etcd processes die with it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", p.name, err)
	}
	p.cmd = cmd
	p.done = make(chan struct{})
	go func(done chan struct{}) {
		_ = cmd.Wait()
		close(done)
	}(p.done)
	return nil
}

// withoutEnv drops variables starting with prefix: etcd reads its flags from
// ETCD_* variables too (and the integration framework sets ETCD_VERIFY).
func withoutEnv(env []string, prefix string) []string {
	out := env[:0:0]
	for _, kv := range env {
		if !strings.HasPrefix(kv, prefix) {
			out = append(out, kv)
		}
	}
	return out
}

// waitWritable waits until a linearizable write succeeds, failing early if a
// process exits.
func (pc *ProcessCluster) waitWritable(ctx context.Context) error {
	// A client that dials too early backs off for a second; wait until
	// every process listens first.
	for _, p := range pc.procs {
		if err := waitListening(ctx, p); err != nil {
			return err
		}
	}
	cli, err := clientv3.New(ClientConfig(pc.Endpoints()))
	if err != nil {
		return err
	}
	defer cli.Close()
	for {
		for _, p := range pc.procs {
			select {
			case <-p.done:
				return fmt.Errorf("etcd %s exited while starting (see %s)", p.name, p.logPath)
			default:
			}
		}
		attempt, cancel := context.WithTimeout(ctx, time.Second)
		_, err := cli.Put(attempt, "/etcdtest/ready", "")
		cancel()
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("etcd cluster not writable: %w (last error: %v)", ctx.Err(), err)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

func waitListening(ctx context.Context, p *etcdProcess) error {
	addr := strings.TrimPrefix(p.clientURL, "http://")
	for {
		conn, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			return conn.Close()
		}
		select {
		case <-p.done:
			return fmt.Errorf("etcd %s exited while starting (see %s)", p.name, p.logPath)
		case <-ctx.Done():
			return fmt.Errorf("etcd %s not listening on %s: %w", p.name, addr, ctx.Err())
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// Size is the number of processes.
func (pc *ProcessCluster) Size() int { return len(pc.procs) }

// Endpoint is process i's client URL.
func (pc *ProcessCluster) Endpoint(i int) string { return pc.procs[i].clientURL }

// Endpoints are the client URLs of all processes.
func (pc *ProcessCluster) Endpoints() []string {
	eps := make([]string, len(pc.procs))
	for i, p := range pc.procs {
		eps[i] = p.clientURL
	}
	return eps
}

// Client returns a new client to all processes, closed when t ends.
func (pc *ProcessCluster) Client(t testing.TB) *clientv3.Client {
	t.Helper()
	return NewClient(t, pc.Endpoints())
}

// PID is the OS process ID of process i (0 if it is not running), for tests
// that signal it themselves (SIGSTOP, SIGCONT).
func (pc *ProcessCluster) PID(i int) int {
	pc.mu.Lock()
	defer pc.mu.Unlock()
	p := pc.procs[i]
	if p.cmd == nil || isDone(p.done) {
		return 0
	}
	return p.cmd.Process.Pid
}

// Kill sends SIGKILL to process i and waits for it to exit. Killing a process
// that is not running is harmless.
func (pc *ProcessCluster) Kill(i int) {
	pc.mu.Lock()
	defer pc.mu.Unlock()
	pc.kill(pc.procs[i])
}

func (pc *ProcessCluster) kill(p *etcdProcess) {
	if p.cmd == nil {
		return
	}
	_ = p.cmd.Process.Kill()
	<-p.done
}

// Restart starts process i again with its data and ports, killing it first if
// it is running. It does not wait for the process to rejoin.
func (pc *ProcessCluster) Restart(i int) {
	pc.t.Helper()
	pc.mu.Lock()
	defer pc.mu.Unlock()
	p := pc.procs[i]
	pc.kill(p)
	// With a data directory present etcd ignores the initial-cluster flags.
	var initial []string
	for _, q := range pc.procs {
		initial = append(initial, q.name+"="+q.peerURL)
	}
	if err := pc.launch(p, strings.Join(initial, ",")); err != nil {
		pc.t.Fatalf("etcdtest: restart %s: %v", p.name, err)
	}
}

// Leader returns the index of the process that is the raft leader, as
// reported by a running process whose own index it is. It polls until one
// says so or ctx ends.
func (pc *ProcessCluster) Leader(ctx context.Context) (int, error) {
	cfg := ClientConfig(pc.Endpoints())
	cli, err := clientv3.New(cfg)
	if err != nil {
		return -1, err
	}
	defer cli.Close()
	for {
		for i, p := range pc.procs {
			st, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
			resp, err := cli.Status(st, p.clientURL)
			cancel()
			if err == nil && resp.Leader != 0 && resp.Leader == resp.Header.MemberId {
				return i, nil
			}
		}
		select {
		case <-ctx.Done():
			return -1, fmt.Errorf("etcdtest: no leader: %w", ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

func (pc *ProcessCluster) close() {
	pc.mu.Lock()
	defer pc.mu.Unlock()
	if pc.closed {
		return
	}
	pc.closed = true
	for _, p := range pc.procs {
		pc.kill(p)
	}
	if pc.t.Failed() {
		pc.dumpLogs()
	}
}

func (pc *ProcessCluster) dumpLogs() {
	for _, p := range pc.procs {
		b, err := os.ReadFile(p.logPath)
		if err != nil || len(b) == 0 {
			continue
		}
		const tail = 8 << 10
		if len(b) > tail {
			b = b[len(b)-tail:]
		}
		pc.t.Logf("etcdtest: log of %s (%s):\n%s", p.name, p.logPath, b)
	}
}

func isDone(c chan struct{}) bool {
	select {
	case <-c:
		return true
	default:
		return false
	}
}
