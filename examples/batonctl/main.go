// Batonctl shows and changes a Baton group from the outside: who leads,
// which member runs which sync, what is moving; it drains members and
// manages the group's syncs. It is built on coordinator.Describe and
// coordinator.SyncStore.
//
//	go run ./examples/batonctl -endpoints 127.0.0.1:2379 -group orders describe
//	go run ./examples/batonctl -group orders -o json describe
//	go run ./examples/batonctl -group orders drain member-b
//	go run ./examples/batonctl -group orders syncs list
//	go run ./examples/batonctl -group orders syncs put db-7 -weight 2 -label zone=eu -spec '{"table":"orders"}'
//	go run ./examples/batonctl -group orders syncs put db-7 -spec @spec.json
//	go run ./examples/batonctl -group orders syncs delete db-7
//
// With TLS and etcd authentication:
//
//	go run ./examples/batonctl -endpoints https://etcd:2379 -cacert ca.pem -cert client.pem -key client-key.pem \
//	    -user baton-orders -password "$PASSWORD" -group orders describe
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"maps"
	"os"
	"os/signal"
	"slices"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"go.etcd.io/etcd/client/pkg/v3/transport"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/baton-go/baton/assignment"
	"github.com/baton-go/baton/coordinator"
	"github.com/baton-go/baton/internal/keys"
)

const usage = `usage: batonctl [flags] <command>

commands:
  describe                      leader, members, every sync's target and owner, pending moves, invalid specs
  drain <member>                ask the leader to move every sync away from a live member
  syncs list                    the group's syncs with their weight, labels and spec
  syncs put <id> [-weight N] [-label k=v]... [-spec JSON|@file|@-]
                                create a sync, or change one: flags not given keep their stored value
                                (-label replaces the whole label set)
  syncs delete <id>             remove a sync (its owner gets OnRevoke(removed))

flags:
`

// errUsage marks a command line that cannot be run; main prints the usage.
var errUsage = errors.New("batonctl: bad command line")

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout, os.Stderr); err != nil {
		if errors.Is(err, flag.ErrHelp) || errors.Is(err, errUsage) {
			os.Exit(2)
		}
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}

// config is the parsed global flags.
type config struct {
	endpoints, group, prefix, output string
	timeout                          time.Duration
	cacert, cert, key                string
	user, password                   string
}

// run is the whole program: it parses args, talks to etcd and writes to
// stdout (results) and stderr (warnings).
func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("batonctl", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var cfg config
	fs.StringVar(&cfg.endpoints, "endpoints", "127.0.0.1:2379", "comma-separated etcd endpoints")
	fs.StringVar(&cfg.group, "group", "", "the group (required)")
	fs.StringVar(&cfg.prefix, "prefix", coordinator.DefaultPrefix, "etcd key prefix of the groups")
	fs.StringVar(&cfg.output, "o", "table", "output format: table or json")
	fs.DurationVar(&cfg.timeout, "timeout", 10*time.Second, "time limit of the whole command")
	fs.StringVar(&cfg.cacert, "cacert", "", "CA bundle to verify etcd's server certificate (turns TLS on)")
	fs.StringVar(&cfg.cert, "cert", "", "client certificate for TLS client authentication")
	fs.StringVar(&cfg.key, "key", "", "client certificate's private key")
	fs.StringVar(&cfg.user, "user", "", "etcd user name (etcd auth)")
	fs.StringVar(&cfg.password, "password", os.Getenv("BATONCTL_PASSWORD"), "etcd password; default $BATONCTL_PASSWORD")
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), usage)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	rest := fs.Args()
	usageErr := func(format string, a ...any) error {
		fmt.Fprintf(stderr, "batonctl: "+format+"\n\n", a...)
		fs.Usage()
		return errUsage
	}
	switch {
	case len(rest) == 0:
		return usageErr("no command")
	case cfg.group == "":
		return usageErr("-group is required")
	case cfg.output != "table" && cfg.output != "json":
		return usageErr("-o must be table or json, not %q", cfg.output)
	}
	// Check the group and prefix before dialing: a typo is a usage error,
	// not a timeout.
	if _, err := keys.New(cfg.prefix, cfg.group); err != nil {
		return fmt.Errorf("batonctl: %w", err)
	}

	var cmd func(ctx context.Context, cli *clientv3.Client) error
	var err error
	switch rest[0] {
	case "describe":
		if len(rest) != 1 {
			return usageErr("describe takes no arguments")
		}
		cmd = func(ctx context.Context, cli *clientv3.Client) error {
			st, err := coordinator.Describe(ctx, cli, cfg.group, coordinator.WithPrefix(cfg.prefix))
			if err != nil {
				return err
			}
			if cfg.output == "json" {
				return writeJSON(stdout, st)
			}
			return printStatus(stdout, st)
		}
	case "drain":
		if len(rest) != 2 {
			return usageErr("drain takes one member ID")
		}
		member := rest[1]
		if err := keys.ValidateID("member", member); err != nil {
			return fmt.Errorf("batonctl: %w", err)
		}
		cmd = func(ctx context.Context, cli *clientv3.Client) error {
			admin, err := coordinator.NewAdmin(cli, cfg.group, coordinator.WithPrefix(cfg.prefix))
			if err != nil {
				return fmt.Errorf("batonctl: %w", err)
			}
			st, err := admin.Describe(ctx)
			if err != nil {
				return fmt.Errorf("batonctl: drain %s: %w", member, err)
			}
			for _, m := range st.Members {
				if m.ID == member && m.Draining {
					fmt.Fprintf(stdout, "%s was already draining\n", member)
					return nil
				}
			}
			// Drain returns once the member has acknowledged: a drain
			// written just as the member's session ends is asked again of
			// its next registration, never reported and then lost.
			if err := admin.Drain(ctx, member); err != nil {
				return fmt.Errorf("batonctl: drain %s: %w", member, err)
			}
			fmt.Fprintf(stdout, "%s is draining: the leader moves its syncs away (watch with describe)\n", member)
			return nil
		}
	case "syncs":
		if len(rest) < 2 {
			return usageErr("syncs needs list, put or delete")
		}
		cmd, err = syncsCommand(cfg, rest[1:], stdout, stderr)
		if errors.Is(err, errUsage) {
			return usageErr("%v", strings.TrimPrefix(err.Error(), errUsage.Error()+": "))
		}
		if err != nil {
			return err
		}
	default:
		return usageErr("unknown command %q", rest[0])
	}

	ctx, cancel := context.WithTimeout(ctx, cfg.timeout)
	defer cancel()
	cli, err := dial(cfg)
	if err != nil {
		return err
	}
	defer cli.Close()
	return cmd(ctx, cli)
}

func dial(cfg config) (*clientv3.Client, error) {
	cc := clientv3.Config{
		Endpoints:   strings.Split(cfg.endpoints, ","),
		DialTimeout: 5 * time.Second,
		Username:    cfg.user,
		Password:    cfg.password,
		// clientv3 logs every retried request; the command's own error says
		// what went wrong.
		Logger: zap.NewNop(),
	}
	if cfg.cacert != "" || cfg.cert != "" {
		tlsInfo := transport.TLSInfo{TrustedCAFile: cfg.cacert, CertFile: cfg.cert, KeyFile: cfg.key}
		tc, err := tlsInfo.ClientConfig()
		if err != nil {
			return nil, fmt.Errorf("batonctl: TLS: %w", err)
		}
		cc.TLS = tc
	}
	cli, err := clientv3.New(cc)
	if err != nil {
		return nil, fmt.Errorf("batonctl: connect to %s: %w", cfg.endpoints, err)
	}
	return cli, nil
}

// labelFlags collects repeated -label k=v flags.
type labelFlags map[string]string

func (l labelFlags) String() string {
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(l)) {
		parts = append(parts, k+"="+l[k])
	}
	return strings.Join(parts, ",")
}

func (l labelFlags) Set(s string) error {
	k, v, ok := strings.Cut(s, "=")
	if !ok || k == "" {
		return fmt.Errorf("label %q is not key=value", s)
	}
	l[k] = v
	return nil
}

func syncsCommand(cfg config, args []string, stdout, stderr io.Writer) (func(context.Context, *clientv3.Client) error, error) {
	store := func(cli *clientv3.Client) *coordinator.SyncStore {
		return coordinator.NewSyncStore(cli, cfg.group, coordinator.WithPrefix(cfg.prefix))
	}
	switch args[0] {
	case "list":
		if len(args) != 1 {
			return nil, fmt.Errorf("%w: syncs list takes no arguments", errUsage)
		}
		return func(ctx context.Context, cli *clientv3.Client) error {
			syncs, err := store(cli).List(ctx)
			if err != nil && !errors.Is(err, coordinator.ErrInvalidSpec) {
				return err
			}
			if err != nil {
				// The readable syncs are still listed; describe shows the
				// unreadable ones too.
				fmt.Fprintf(stderr, "warning: %v\n", err)
			}
			if cfg.output == "json" {
				return writeJSON(stdout, syncsJSON(syncs))
			}
			tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', 0)
			fmt.Fprintln(tw, "SYNC\tWEIGHT\tLABELS\tREVISION\tSPEC")
			for _, sy := range syncs {
				fmt.Fprintf(tw, "%s\t%d\t%s\t%d\t%s\n", sy.ID, sy.EffectiveWeight(), labelFlags(sy.Labels), sy.Revision, clip(string(sy.Spec), 60))
			}
			return tw.Flush()
		}, nil
	case "delete":
		if len(args) != 2 {
			return nil, fmt.Errorf("%w: syncs delete takes one sync ID", errUsage)
		}
		id := args[1]
		if err := keys.ValidateID("sync", id); err != nil {
			return nil, fmt.Errorf("batonctl: %w", err)
		}
		return func(ctx context.Context, cli *clientv3.Client) error {
			if err := store(cli).Delete(ctx, id); err != nil {
				return err
			}
			fmt.Fprintf(stdout, "deleted %s\n", id)
			return nil
		}, nil
	case "put":
		fs := flag.NewFlagSet("syncs put", flag.ContinueOnError)
		fs.SetOutput(io.Discard)
		weight := fs.Int("weight", -1, "capacity units the sync costs (0 or 1: one unit)")
		labels := labelFlags{}
		fs.Var(labels, "label", "label key=value, repeatable; replaces the stored labels")
		spec := fs.String("spec", "", "the spec as JSON, @file to read it from a file, @- from stdin")
		// The ID may come before or after the flags.
		var id string
		rest := args[1:]
		if len(rest) > 0 && !strings.HasPrefix(rest[0], "-") {
			id, rest = rest[0], rest[1:]
		}
		if err := fs.Parse(rest); err != nil {
			return nil, fmt.Errorf("%w: syncs put: %v", errUsage, err)
		}
		switch {
		case id == "" && fs.NArg() == 1:
			id = fs.Arg(0)
		case id == "" || fs.NArg() != 0:
			return nil, fmt.Errorf("%w: syncs put takes one sync ID", errUsage)
		}
		if err := keys.ValidateID("sync", id); err != nil {
			return nil, fmt.Errorf("batonctl: %w", err)
		}
		set := map[string]bool{}
		fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
		var specBytes []byte
		if set["spec"] {
			b, err := readSpec(*spec)
			if err != nil {
				return nil, err
			}
			specBytes = b
		}
		return func(ctx context.Context, cli *clientv3.Client) error {
			sy := assignment.Sync{ID: id}
			// Start from what is stored, so "put db-7 -weight 3" does not
			// wipe db-7's spec.
			stored, found, err := store(cli).Get(ctx, id)
			if err != nil {
				return fmt.Errorf("batonctl: stored sync %s is unreadable (%v); delete it or give every field", id, err)
			}
			verb := "created"
			if found {
				verb = "updated"
				sy.Weight, sy.Labels, sy.Spec = stored.Weight, stored.Labels, stored.Spec
			}
			if set["weight"] {
				sy.Weight = *weight
			}
			if set["label"] {
				sy.Labels = map[string]string(labels)
			}
			if set["spec"] {
				sy.Spec = specBytes
			}
			if err := store(cli).Put(ctx, sy); err != nil {
				return err
			}
			fmt.Fprintf(stdout, "%s %s\n", verb, id)
			return nil
		}, nil
	}
	return nil, fmt.Errorf("%w: unknown syncs command %q", errUsage, args[0])
}

func readSpec(s string) ([]byte, error) {
	var b []byte
	var err error
	switch {
	case s == "@-":
		b, err = io.ReadAll(os.Stdin)
	case strings.HasPrefix(s, "@"):
		b, err = os.ReadFile(s[1:])
	default:
		b = []byte(s)
	}
	if err != nil {
		return nil, fmt.Errorf("batonctl: read spec: %w", err)
	}
	b = []byte(strings.TrimSpace(string(b)))
	if len(b) > 0 && !json.Valid(b) {
		return nil, fmt.Errorf("batonctl: the spec is not valid JSON: %s", clip(string(b), 60))
	}
	return b, nil
}

// syncJSON shows a spec as JSON rather than base64.
type syncJSON struct {
	ID       string            `json:"id"`
	Weight   int               `json:"weight"`
	Labels   map[string]string `json:"labels,omitempty"`
	Spec     json.RawMessage   `json:"spec,omitempty"`
	Revision int64             `json:"revision"`
}

func syncsJSON(syncs []assignment.Sync) []syncJSON {
	out := make([]syncJSON, 0, len(syncs))
	for _, sy := range syncs {
		out = append(out, syncJSON{ID: sy.ID, Weight: sy.EffectiveWeight(), Labels: sy.Labels, Spec: sy.Spec, Revision: sy.Revision})
	}
	return out
}

func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// state names where a sync stands.
func state(s coordinator.SyncStatus) string {
	switch {
	case s.Target == "":
		return "unplaced"
	case s.Owner == "":
		return "starting"
	case s.Owner != s.Target:
		return "moving"
	}
	return "running"
}

func printStatus(w io.Writer, st *coordinator.GroupStatus) error {
	leader := st.Leader
	if leader == "" {
		leader = "(none)"
	}
	fmt.Fprintf(w, "group %s   leader %s   plan generation %d   etcd revision %d\n", st.Group, leader, st.Generation, st.Revision)
	fmt.Fprintf(w, "%d members, %d syncs, %d pending, %d invalid\n", len(st.Members), len(st.Syncs), st.Pending, len(st.Invalid))
	if st.PlanError != "" {
		fmt.Fprintf(w, "PLAN ERROR (the previous targets stand): %s\n", st.PlanError)
	}
	fmt.Fprintln(w)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "MEMBER\tWEIGHT\tLABELS\tSTATE\tTARGETED\tOWNED")
	for _, m := range st.Members {
		state := "live"
		if m.Draining {
			state = "draining"
		}
		if m.ID == st.Leader {
			state += ",leader"
		}
		fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%d\t%d\n", m.ID, m.EffectiveWeight(), orDash(labelFlags(m.Labels).String()), state, m.Targeted, m.Owned)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintln(w)
	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "SYNC\tWEIGHT\tTARGET\tOWNER\tTOKEN\tSTATE")
	for _, s := range st.Syncs {
		token := "-"
		if s.Token != 0 {
			token = fmt.Sprint(s.Token)
		}
		fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%s\t%s\n", s.ID, s.Weight, orDash(s.Target), orDash(s.Owner), token, state(s))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if len(st.Invalid) > 0 {
		fmt.Fprintln(w)
		tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "INVALID SPEC\tERROR")
		for _, inv := range st.Invalid {
			fmt.Fprintf(tw, "%s\t%s\n", inv.Key, inv.Error)
		}
		return tw.Flush()
	}
	return nil
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func clip(s string, n int) string {
	if len(s) > n {
		return s[:n] + "…"
	}
	return s
}
