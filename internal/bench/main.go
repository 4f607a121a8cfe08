// Command bench measures Baton against a hand-written baseline (one
// concurrency.Mutex per sync, see baselineSystem) on the same etcd, with the
// same syncs: planned handoff gaps when a member joins and when one drains,
// crash failover, cold start, etcd traffic per change and in steady state,
// and the memory of a leader and of a non-leader member. It prints a
// Markdown table to stdout, progress to stderr, and with -json writes every
// measurement.
//
//	go run ./internal/bench                    # embedded etcd, fsync on, ~5 minutes
//	go run ./internal/bench -fsync=false -json out.json
//	go run ./internal/bench -endpoints http://10.0.0.1:2379
//	go run ./internal/bench -report out.json   # the table of an earlier run
//
// Every member runs in this process with its own etcd client, except the
// member whose memory is measured: that one runs in a child process (the
// same binary with -member-mode). The peers scenario (-scenarios peers,
// not run by default) puts Baton beside Kafka consumer groups and dskit's
// ring, built from bench/peers, a module of its own: there every member of
// every system is a process of its own (-proc-member for Baton and the
// baseline), so a crash is a SIGKILL. BENCHMARKS.md shows the runs and
// explains what limits each figure.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/baton-go/baton/coordinator"
)

// shape is a group's size: syncs × members.
type shape struct {
	Syncs   int `json:"syncs"`
	Members int `json:"members"`
}

func (s shape) String() string { return fmt.Sprintf("%dx%d", s.Syncs, s.Members) }

func parseShape(s string) (shape, error) {
	a, b, ok := strings.Cut(strings.TrimSpace(s), "x")
	if !ok {
		return shape{}, fmt.Errorf("shape %q: want SYNCSxMEMBERS", s)
	}
	n, err1 := strconv.Atoi(a)
	m, err2 := strconv.Atoi(b)
	if err1 != nil || err2 != nil || n < 1 || m < 2 {
		return shape{}, fmt.Errorf("shape %q: want SYNCSxMEMBERS with at least 1 sync and 2 members", s)
	}
	return shape{n, m}, nil
}

// largeShapes are the cold-start shapes DESIGN.md asks to start, too
// large to run by default: -cold large (or -memory large) runs them.
const largeShapes = "300000x20,1000000x1000"

func parseShapes(s string) ([]shape, error) {
	var out []shape
	for _, f := range strings.Split(strings.ReplaceAll(s, "large", largeShapes), ",") {
		if strings.TrimSpace(f) == "" {
			continue
		}
		sh, err := parseShape(f)
		if err != nil {
			return nil, err
		}
		out = append(out, sh)
	}
	return out, nil
}

type config struct {
	Endpoints      string          `json:"endpoints,omitempty"`
	Fsync          bool            `json:"fsync"`
	EtcdProcess    bool            `json:"etcd_process"`
	Systems        []string        `json:"systems"`
	Scenarios      []string        `json:"scenarios"`
	TTL            time.Duration   `json:"ttl"`
	Settle         time.Duration   `json:"settle"`
	Reps           int             `json:"handoff_reps"`
	Handoff        shape           `json:"handoff"`
	Failover       shape           `json:"failover"`
	FailoverTTLs   []time.Duration `json:"failover_ttls"`
	FailoverReps   int             `json:"failover_reps"`
	FailoverLeader bool            `json:"failover_leader"`
	StartCost      time.Duration   `json:"start_cost,omitempty"`
	Rolling        shape           `json:"rolling"`
	RollingTTL     time.Duration   `json:"rolling_ttl"`
	Cold           []shape         `json:"cold"`
	ColdReps       int             `json:"cold_reps"`
	Steady         time.Duration   `json:"steady"`
	Memory         []shape         `json:"memory"`
	Plan           []shape         `json:"plan,omitempty"`
	Inflight       int             `json:"baseline_inflight"`
	// The peers scenario.
	PeerSystems     []string        `json:"peer_systems,omitempty"`
	PeerShape       shape           `json:"peer_shape"`
	PeerSessions    []time.Duration `json:"peer_sessions,omitempty"`
	KafkaHeartbeats []time.Duration `json:"kafka_heartbeats,omitempty"`
	RingHeartbeats  []time.Duration `json:"ring_heartbeats,omitempty"`
	RingTokens      int             `json:"ring_tokens"`
	PeerReps        int             `json:"peer_reps"`
	PeerSteady      time.Duration   `json:"peer_steady"`
	PeersBin        string          `json:"-"`
	Timeout         time.Duration   `json:"timeout"`
	ColdTimeout     time.Duration   `json:"cold_timeout"`
}

type bench struct {
	env    *etcdEnv
	cfg    config
	seq    int
	checks map[string]string // group -> the recorder's single-owner check
}

func (b *bench) logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "%s "+format+"\n", append([]any{time.Now().Format("15:04:05")}, args...)...)
}

// quiet is how long ownership must not change before a group counts as
// settled: long enough for the Baton leader's follow-up round.
func (b *bench) quiet() time.Duration { return max(4*b.cfg.Settle, time.Second) }

func (b *bench) system(name string, ttl time.Duration) system {
	if name == "baseline" {
		return &baselineSystem{env: b.env, ttl: ttl, inflight: b.cfg.Inflight}
	}
	s := newBatonSystem(b.env, ttl, b.cfg.Settle)
	s.trailing = name == "baton-trailing"
	if name == "baton-cold" || name == "baton-warm" {
		s.startCost, s.prepare = b.cfg.StartCost, name == "baton-warm"
	}
	return s
}

func main() {
	if len(os.Args) > 1 && os.Args[1] == "-etcd-mode" {
		if err := etcdMain(os.Args[2:]); err != nil {
			fmt.Fprintln(os.Stderr, "bench etcd:", err)
			os.Exit(1)
		}
		return
	}
	if len(os.Args) > 1 && os.Args[1] == "-proc-member" {
		if err := procMemberMain(os.Args[2:]); err != nil {
			fmt.Fprintln(os.Stderr, "bench proc-member:", err)
			os.Exit(1)
		}
		return
	}
	if len(os.Args) > 1 && os.Args[1] == "-member-mode" {
		if err := memberMain(os.Args[2:]); err != nil {
			fmt.Fprintln(os.Stderr, "bench member:", err)
			os.Exit(1)
		}
		return
	}
	if len(os.Args) == 3 && os.Args[1] == "-report" {
		// Print the table of an earlier run from its JSON.
		if err := reprint(os.Args[2]); err != nil {
			fmt.Fprintln(os.Stderr, "bench:", err)
			os.Exit(1)
		}
		return
	}
	cfg, jsonPath, err := parseFlags()
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if err := run(ctx, cfg, jsonPath); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

func parseFlags() (config, string, error) {
	endpoints := flag.String("endpoints", "", "comma-separated etcd endpoints; empty: an embedded etcd in a temporary directory")
	fsync := flag.Bool("fsync", true, "embedded etcd fsyncs its WAL and database (off: WithUnsafeNoFsync)")
	etcdProcess := flag.Bool("etcd-process", false, "run the embedded etcd in its own process rather than in the members' process")
	jsonPath := flag.String("json", "", "write every measurement to this JSON file")
	systems := flag.String("systems", "baton,baseline", "systems to run: baton, baton-trailing (Baton with its leading edge off: every change waits Settle), baton-cold (each sync's start costs -start-cost in OnAssign), baton-warm (the same, paid ahead by OnPrepare), baseline")
	startCost := flag.Duration("start-cost", 300*time.Millisecond, "baton-cold and baton-warm: what a sync's start costs its handler")
	scenarios := flag.String("scenarios", "handoff,failover,cold,memory", "scenarios to run: handoff, failover, cold (with steady state), memory, rolling (rolling restarts with stable member IDs; Baton's systems only), plan (the leader alone, not by default), peers (Baton beside Kafka groups and dskit's ring, every member its own process; not by default)")
	ttl := flag.Duration("ttl", coordinator.DefaultTTL, "lease TTL outside the failover scenario")
	settle := flag.Duration("settle", coordinator.DefaultSettle, "Baton's settle")
	reps := flag.Int("reps", 3, "repetitions of the handoff scenario")
	handoff := flag.String("handoff", "1000x10", "handoff group: SYNCSxMEMBERS (one member joins, then drains)")
	failover := flag.String("failover", "1000x10", "failover group: SYNCSxMEMBERS")
	rolling := flag.String("rolling", "1000x10", "rolling group: SYNCSxMEMBERS (every member restarts in turn with its member ID)")
	rollingTTL := flag.Duration("rolling-ttl", 2*time.Second, "lease TTL of the rolling scenario (a crashed member's restart waits for it)")
	failoverTTLs := flag.String("failover-ttls", "2s,5s", "lease TTLs for the failover scenario")
	failoverReps := flag.Int("failover-reps", 3, "crashes per TTL")
	failoverLeader := flag.Bool("failover-leader", true, "Baton: also crash the leader in each repetition")
	cold := flag.String("cold", "1000x10,10000x10,1000x50,10000x50", "cold-start shapes; steady state is measured after the last; \"large\" stands for "+largeShapes)
	coldReps := flag.Int("cold-reps", 2, "repetitions of each cold start")
	steady := flag.Duration("steady", 15*time.Second, "steady-state window after the last cold start (0: skip)")
	memory := flag.String("memory", "10000x10,2000x2", "memory shapes (the measured member runs in a child process)")
	planShapes := flag.String("plan", "large", "plan shapes: the leader alone in a child process, the other members bare keys (\"large\" stands for "+largeShapes+")")
	inflight := flag.Int("baseline-inflight", 8, "baseline: TryLocks in flight per member")
	peerSystems := flag.String("peer-systems", "baton,baseline,kafka-classic,kafka-848,ring", "peers scenario: systems to compare")
	peerShape := flag.String("peer-shape", "1000x10", "peers scenario: SYNCSxMEMBERS (one more joins, drains, then one is killed)")
	peerSessions := flag.String("peer-sessions", "2s,10s", "peers scenario: lease TTL = session timeout = heartbeat timeout")
	kafkaHeartbeats := flag.String("kafka-heartbeats", "3s,1s,100ms,10ms", "peers scenario: Kafka heartbeat intervals (those above a third of the session are skipped)")
	ringHeartbeats := flag.String("ring-heartbeats", "1s,100ms", "peers scenario: ring heartbeat periods (those above a quarter of the session are skipped)")
	ringTokens := flag.Int("ring-tokens", 128, "peers scenario: tokens per ring instance")
	peerReps := flag.Int("peer-reps", 3, "peers scenario: repetitions of every variant, interleaved")
	peerSteady := flag.Duration("peer-steady", 10*time.Second, "peers scenario: steady-state window")
	peersBin := flag.String("peers-bin", "", "peers scenario: the bench/peers binary (empty: built from bench/peers)")
	timeout := flag.Duration("timeout", 60*time.Second, "limit for a group to settle")
	coldTimeout := flag.Duration("cold-timeout", 120*time.Second, "limit for a cold start")
	flag.Parse()

	cfg := config{
		Endpoints: *endpoints, Fsync: *fsync, EtcdProcess: *etcdProcess, TTL: *ttl, Settle: *settle, Reps: *reps,
		FailoverReps: *failoverReps, FailoverLeader: *failoverLeader, ColdReps: *coldReps,
		Steady: *steady, Inflight: *inflight, Timeout: *timeout, ColdTimeout: *coldTimeout,
		RingTokens: *ringTokens, PeerReps: *peerReps, PeerSteady: *peerSteady, PeersBin: *peersBin,
	}
	for _, s := range strings.Split(*systems, ",") {
		switch s = strings.TrimSpace(s); s {
		case "baton", "baton-trailing", "baton-cold", "baton-warm", "baseline":
			cfg.Systems = append(cfg.Systems, s)
		case "":
		default:
			return cfg, "", fmt.Errorf("unknown system %q", s)
		}
	}
	for _, s := range strings.Split(*scenarios, ",") {
		switch s = strings.TrimSpace(s); s {
		case "handoff", "failover", "cold", "memory", "rolling", "plan", "peers":
			cfg.Scenarios = append(cfg.Scenarios, s)
		case "":
		default:
			return cfg, "", fmt.Errorf("unknown scenario %q", s)
		}
	}
	for _, s := range strings.Split(*peerSystems, ",") {
		switch s = strings.TrimSpace(s); s {
		case "baton", "baseline", "kafka-classic", "kafka-848", "ring":
			cfg.PeerSystems = append(cfg.PeerSystems, s)
		case "":
		default:
			return cfg, "", fmt.Errorf("unknown peer system %q", s)
		}
	}
	var err error
	if cfg.PeerShape, err = parseShape(*peerShape); err != nil {
		return cfg, "", err
	}
	if cfg.PeerSessions, err = parseDurations(*peerSessions); err != nil {
		return cfg, "", err
	}
	for _, d := range cfg.PeerSessions {
		if d < coordinator.MinTTL || d%time.Second != 0 {
			return cfg, "", fmt.Errorf("-peer-sessions %v: want whole seconds ≥ 1s (they are Baton's lease TTL too)", d)
		}
	}
	if cfg.KafkaHeartbeats, err = parseDurations(*kafkaHeartbeats); err != nil {
		return cfg, "", err
	}
	if cfg.RingHeartbeats, err = parseDurations(*ringHeartbeats); err != nil {
		return cfg, "", err
	}
	if cfg.PeerReps < 1 || cfg.RingTokens < 1 {
		return cfg, "", fmt.Errorf("-peer-reps and -ring-tokens must be at least 1")
	}
	if cfg.Handoff, err = parseShape(*handoff); err != nil {
		return cfg, "", err
	}
	if cfg.Failover, err = parseShape(*failover); err != nil {
		return cfg, "", err
	}
	cfg.StartCost = *startCost
	if cfg.Rolling, err = parseShape(*rolling); err != nil {
		return cfg, "", err
	}
	if cfg.RollingTTL = *rollingTTL; cfg.RollingTTL < coordinator.MinTTL || cfg.RollingTTL%time.Second != 0 {
		return cfg, "", fmt.Errorf("-rolling-ttl %v: want whole seconds ≥ 1s", cfg.RollingTTL)
	}
	if cfg.Cold, err = parseShapes(*cold); err != nil {
		return cfg, "", err
	}
	if cfg.Memory, err = parseShapes(*memory); err != nil {
		return cfg, "", err
	}
	if cfg.Plan, err = parseShapes(*planShapes); err != nil {
		return cfg, "", err
	}
	for _, f := range strings.Split(*failoverTTLs, ",") {
		d, err := time.ParseDuration(strings.TrimSpace(f))
		if err != nil || d < coordinator.MinTTL || d%time.Second != 0 {
			return cfg, "", fmt.Errorf("failover TTL %q: want whole seconds ≥ 1s", f)
		}
		cfg.FailoverTTLs = append(cfg.FailoverTTLs, d)
	}
	if cfg.TTL < coordinator.MinTTL || cfg.TTL%time.Second != 0 {
		return cfg, "", fmt.Errorf("-ttl %v: want whole seconds ≥ 1s", cfg.TTL)
	}
	if cfg.Reps < 1 || cfg.FailoverReps < 1 || cfg.ColdReps < 1 {
		return cfg, "", fmt.Errorf("repetitions must be at least 1")
	}
	return cfg, *jsonPath, nil
}

// results is everything one run measured; -json writes it.
type results struct {
	Machine  machine                  `json:"machine"`
	Command  string                   `json:"command"`
	Config   config                   `json:"config"`
	Started  time.Time                `json:"started"`
	Took     string                   `json:"took"`
	Handoff  map[string]handoffPair   `json:"handoff,omitempty"`
	Failover map[string][]failoverRun `json:"failover,omitempty"`
	Rolling  map[string][]rollingRun  `json:"rolling,omitempty"`
	Cold     map[string][]coldRun     `json:"cold,omitempty"`
	Steady   map[string]*steadyRun    `json:"steady,omitempty"`
	Memory   []memStat                `json:"memory,omitempty"`
	Plan     []planRun                `json:"plan,omitempty"`
	Peers    []peerRun                `json:"peers,omitempty"`
	Checks   map[string]string        `json:"single_owner_check,omitempty"`
}

type handoffPair struct {
	Join  []handoffRun `json:"join"`
	Drain []handoffRun `json:"drain"`
}

type machine struct {
	CPUs      int    `json:"nproc"`
	CPU       string `json:"cpu"`
	GoVersion string `json:"go"`
	OS        string `json:"os"`
}

func machineInfo() machine {
	m := machine{CPUs: runtime.NumCPU(), GoVersion: runtime.Version(), OS: runtime.GOOS + "/" + runtime.GOARCH}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(l, ":"); ok && strings.TrimSpace(k) == "model name" {
				m.CPU = strings.TrimSpace(v)
				break
			}
		}
	}
	return m
}

func run(ctx context.Context, cfg config, jsonPath string) error {
	start := time.Now()
	env, err := startEtcd(cfg.Endpoints, cfg.Fsync, cfg.EtcdProcess)
	if err != nil {
		return err
	}
	defer env.close()
	b := &bench{env: env, cfg: cfg, checks: map[string]string{}}
	res := &results{
		Machine: machineInfo(), Command: strings.Join(os.Args, " "), Config: cfg, Started: start,
		Handoff: map[string]handoffPair{}, Failover: map[string][]failoverRun{}, Rolling: map[string][]rollingRun{},
		Cold: map[string][]coldRun{}, Steady: map[string]*steadyRun{}, Checks: map[string]string{},
	}
	b.logf("etcd at %v (fsync %v); systems %v; scenarios %v", env.endpoints, cfg.Fsync, cfg.Systems, cfg.Scenarios)

	has := func(s string) bool {
		for _, x := range cfg.Scenarios {
			if x == s {
				return true
			}
		}
		return false
	}
	if has("peers") {
		b.logf("peers scenario: %d variants of %v", len(b.variants()), cfg.PeerSystems)
	}
	for _, sysName := range cfg.Systems {
		if has("handoff") {
			j, d, err := b.handoff(ctx, b.system(sysName, cfg.TTL))
			if err != nil {
				return err
			}
			res.Handoff[sysName] = handoffPair{Join: j, Drain: d}
		}
		if has("failover") {
			f, err := b.failover(ctx, sysName)
			if err != nil {
				return err
			}
			res.Failover[sysName] = f
		}
		if has("rolling") && isBaton(sysName) {
			r, err := b.rolling(ctx, b.system(sysName, cfg.RollingTTL))
			if err != nil {
				return err
			}
			res.Rolling[sysName] = r
		}
		if has("cold") {
			c, s, err := b.cold(ctx, b.system(sysName, cfg.TTL))
			if err != nil {
				return err
			}
			res.Cold[sysName], res.Steady[sysName] = c, s
		}
	}
	if has("memory") {
		m, err := b.memory(ctx)
		if err != nil {
			return err
		}
		res.Memory = m
	}
	if has("peers") {
		p, err := b.peers(ctx)
		res.Peers = p
		if err != nil {
			return err
		}
	}
	if has("plan") {
		p, err := b.plan(ctx)
		if err != nil {
			return err
		}
		res.Plan = p
	}
	res.Checks = b.checks
	res.Took = time.Since(start).Round(time.Second).String()
	writeTable(os.Stdout, res)
	if jsonPath != "" {
		f, err := os.Create(jsonPath)
		if err != nil {
			return err
		}
		enc := json.NewEncoder(f)
		enc.SetIndent("", "  ")
		if err := enc.Encode(res); err != nil {
			f.Close()
			return err
		}
		if err := f.Close(); err != nil {
			return err
		}
	}
	b.logf("done in %s", res.Took)
	failed := 0
	for _, p := range res.Peers {
		if p.Error != "" {
			failed++
		}
	}
	if failed > 0 {
		return fmt.Errorf("%d of %d peer runs did not complete (their errors are in the log and the JSON)", failed, len(res.Peers))
	}
	return nil
}

func reprint(path string) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	var res results
	if err := json.Unmarshal(b, &res); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	writeTable(os.Stdout, &res)
	return nil
}
