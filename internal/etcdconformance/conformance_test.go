package etcdconformance

import (
	"testing"
	"testing/synctest"

	"go.uber.org/goleak"

	"github.com/baton-go/baton/internal/etcdtest"
	"github.com/baton-go/baton/internal/simetcd"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, etcdtest.LeakOptions()...)
}

// TestSimetcdAgreesWithEtcd runs every scenario on real etcd and on simetcd
// in a synctest bubble, and fails on any difference.
func TestSimetcdAgreesWithEtcd(t *testing.T) {
	Check(t, RealEtcd(), simBackend())
}

// simBackend is simetcd with the integration framework's lease minimum.
func simBackend() Backend {
	return Backend{Name: "simetcd", Run: func(t *testing.T, f func(t *testing.T, e Env)) {
		synctest.Test(t, func(t *testing.T) {
			s, err := simetcd.New(simetcd.Config{Dir: t.TempDir(), MinLeaseTTL: 1})
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			cli := s.Connect().Client()
			defer cli.Close()
			f(t, Env{Client: cli, LoseLeader: s.LoseLeader})
		})
	}}
}

func TestLineDiff(t *testing.T) {
	got := lineDiff([]string{"a", "b", "c"}, []string{"a", "x", "c", "d"})
	want := "  a\n- b\n+ x\n  c\n+ d\n"
	if got != want {
		t.Errorf("lineDiff:\n%s\nwant:\n%s", got, want)
	}
}
