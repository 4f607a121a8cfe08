package chaos_test

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"time"
)

// kind is one fault a schedule can inject.
type kind string

// Faults of etcd and the network, run one at a time on the etcd lane.
const (
	kCutOff        kind = "cut-off"      // blackhole an etcd member's bridge: the member pinned to it is cut off
	kPauseDrop     kind = "pause-drop"   // drop its client connections and refuse new ones for a while
	kDrop          kind = "drop"         // drop its client connections a few times; clients reconnect at once
	kLeaderKill    kind = "leader-kill"  // stop the etcd raft leader, restart it later
	kMemberRestart kind = "etcd-restart" // stop an etcd follower, restart it later
	kQuorumLoss    kind = "quorum-loss"  // stop two of the three etcd members, restart both later
	kCompaction    kind = "compaction"   // stall a member's watches, change specs, compact, reconnect
)

// Faults of the members and of the load, run one at a time on the member
// lane, concurrently with the etcd lane.
const (
	kCrash     kind = "crash"           // close a member's client (kill it), restart it with the same ID later
	kRolling   kind = "rolling-restart" // every base member leaves and joins again with its ID, one after another
	kJoinLeave kind = "join-leave"      // the spare joins and leaves, or a base member leaves and comes back
	kFlood     kind = "flood"           // hundreds of syncs added at once, then removed at once
	kCallbacks kind = "callbacks"       // members' callbacks become slow, panic or return errors
	kSpecs     kind = "spec-churn"      // specs of owned syncs change
)

var (
	etcdKinds   = []kind{kCutOff, kPauseDrop, kDrop, kLeaderKill, kMemberRestart, kQuorumLoss, kCompaction}
	memberKinds = []kind{kCrash, kRolling, kJoinLeave, kFlood, kCallbacks, kSpecs}
	modeNames   = []string{"error", "mixed", "panic", "slow"}
)

// step is one fault with its parameters, all drawn from the seed.
type step struct {
	Kind   kind
	Gap    time.Duration // quiet time before the step
	Dur    time.Duration // how long the fault lasts
	Target int           // etcd member or slot index
	N      int           // flood size, drops, specs changed, members whose callbacks misbehave
	Mode   string        // callback mode
	Alt    bool          // variant: crash the Baton leader; the spare joins and leaves
	Order  []int         // rolling restart order; syncs whose spec changes
}

func (s step) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "+%v %s", s.Gap, s.Kind)
	switch s.Kind {
	case kCutOff, kPauseDrop, kMemberRestart, kQuorumLoss:
		fmt.Fprintf(&b, " etcd%d for %v", s.Target, s.Dur)
	case kLeaderKill:
		fmt.Fprintf(&b, " for %v", s.Dur)
	case kDrop:
		fmt.Fprintf(&b, " etcd%d x%d over %v", s.Target, s.N, s.Dur)
	case kCompaction:
		fmt.Fprintf(&b, " etcd%d stalled %v, %d specs changed", s.Target, s.Dur, s.N)
	case kCrash:
		if s.Alt {
			fmt.Fprintf(&b, " the Baton leader, down %v", s.Dur)
		} else {
			fmt.Fprintf(&b, " m%d, down %v", s.Target, s.Dur)
		}
	case kRolling:
		fmt.Fprintf(&b, " order %v, pause %v", s.Order, s.Dur)
	case kJoinLeave:
		if s.Alt {
			fmt.Fprintf(&b, " spare m%d for %v", spareSlot, s.Dur)
		} else {
			fmt.Fprintf(&b, " m%d away %v", s.Target, s.Dur)
		}
	case kFlood:
		fmt.Fprintf(&b, " %d syncs for %v", s.N, s.Dur)
	case kCallbacks:
		fmt.Fprintf(&b, " %s on %d member(s) from m%d for %v", s.Mode, s.N, s.Target, s.Dur)
	case kSpecs:
		fmt.Fprintf(&b, " %d specs", s.N)
	}
	return b.String()
}

// Solo faults run one at a time on a settled group after the lanes, so
// their failover is measured undisturbed.
const (
	soloCrash        = "crash"          // a member that does not lead
	soloCrashLeader  = "crash-leader"   // the Baton leader
	soloCutOff       = "cut-off"        // a member that does not lead
	soloCutOffLeader = "cut-off-leader" // the Baton leader (crashed instead if it is m3, which no bridge cuts off)
)

var soloKinds = []string{soloCrash, soloCrashLeader, soloCutOff, soloCutOffLeader}

// schedule is what one seed does: two lanes of faults run concurrently,
// then solo faults one at a time.
type schedule struct {
	Seed    uint64
	Extra   int // random faults per lane on top of one of each kind
	Etcd    []step
	Members []step
	Solo    []string
}

// rerun is the command that runs the schedule again.
func (sc schedule) rerun() string {
	env := fmt.Sprintf("BATON_CHAOS_SEED=%d", sc.Seed)
	if sc.Extra > 0 {
		env += fmt.Sprintf(" BATON_CHAOS_EXTRA=%d", sc.Extra)
	}
	return env + " go test -run 'Chaos/Seed' -v ./internal/chaos/"
}

func (sc schedule) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "schedule of seed %d\n  etcd lane:\n", sc.Seed)
	for _, s := range sc.Etcd {
		fmt.Fprintf(&b, "    %v\n", s)
	}
	b.WriteString("  member lane:\n")
	for _, s := range sc.Members {
		fmt.Fprintf(&b, "    %v\n", s)
	}
	fmt.Fprintf(&b, "  then solo: %v\n", sc.Solo)
	return b.String()
}

// newSchedule draws a schedule from seed: each lane runs every fault of its
// kind once, in a random order, then extra random ones.
func newSchedule(seed uint64, cfg config, extra int) schedule {
	r := rand.New(rand.NewPCG(seed, 0x626174_6f6e))
	ttl := cfg.ttl
	between := func(lo, hi time.Duration) time.Duration {
		d := lo + time.Duration(r.Int64N(int64(hi-lo)+1))
		return d.Round(time.Millisecond)
	}
	lane := func(kinds []kind) []kind {
		out := slices.Clone(kinds)
		r.Shuffle(len(out), func(i, j int) { out[i], out[j] = out[j], out[i] })
		for range extra {
			out = append(out, kinds[r.IntN(len(kinds))])
		}
		return out
	}
	sc := schedule{Seed: seed, Extra: extra}
	for _, k := range lane(etcdKinds) {
		s := step{Kind: k, Gap: between(300*time.Millisecond, 1500*time.Millisecond), Target: r.IntN(3)}
		switch k {
		case kCutOff:
			// Long enough for the others to take the member's syncs over.
			s.Dur = between(ttl+time.Second, 2*ttl+time.Second)
		case kQuorumLoss:
			// Long enough for every lease to run out.
			s.Dur = between(ttl+500*time.Millisecond, 2*ttl+500*time.Millisecond)
		case kPauseDrop:
			s.Dur = between(500*time.Millisecond, 2*ttl)
		case kDrop:
			s.N, s.Dur = 1+r.IntN(4), between(200*time.Millisecond, 2*time.Second)
		case kLeaderKill, kMemberRestart:
			s.Dur = between(200*time.Millisecond, 2*ttl)
		case kCompaction:
			// Short enough for the stalled member to keep its lease.
			s.Dur, s.N = between(200*time.Millisecond, ttl/4), 1+r.IntN(5)
			s.Order = r.Perm(cfg.syncs)[:s.N]
		}
		sc.Etcd = append(sc.Etcd, s)
	}
	for _, k := range lane(memberKinds) {
		s := step{Kind: k, Gap: between(300*time.Millisecond, 1500*time.Millisecond), Target: r.IntN(baseSlots)}
		switch k {
		case kCrash:
			s.Alt, s.Dur = r.IntN(2) == 0, between(ttl/2, 3*ttl)
		case kRolling:
			s.Order, s.Dur = r.Perm(baseSlots), between(200*time.Millisecond, time.Second)
		case kJoinLeave:
			s.Alt, s.Dur = r.IntN(2) == 0, between(500*time.Millisecond, 3*time.Second)
		case kFlood:
			s.N, s.Dur = 150+r.IntN(250), between(500*time.Millisecond, 3*time.Second)
		case kCallbacks:
			s.Mode, s.N, s.Dur = modeNames[r.IntN(len(modeNames))], 1+r.IntN(2), between(time.Second, 4*time.Second)
		case kSpecs:
			s.N = 1 + r.IntN(8)
			s.Order = r.Perm(cfg.syncs)[:s.N]
		}
		sc.Members = append(sc.Members, s)
	}
	// Consecutive seeds cover every solo fault between them.
	for k := range 2 {
		sc.Solo = append(sc.Solo, soloKinds[(int(seed%4)+k)%len(soloKinds)])
	}
	return sc
}
