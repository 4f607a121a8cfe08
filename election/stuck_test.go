package election_test

import (
	"context"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"go.etcd.io/etcd/client/v3/concurrency"

	"github.com/baton-go/baton/election"
	"github.com/baton-go/baton/internal/simetcd"
)

// TestCampaignRequestWithoutAnswerIsRetried: a Campaign request whose answer
// never comes (held by the connection until its ctx ends) must not hold the
// Campaign for good. Found by the simulator (internal/sim): a member whose
// candidate key was first in line, with one such request, kept every other
// member from leading while its session lived.
func TestCampaignRequestWithoutAnswerIsRetried(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		srv, err := simetcd.New(simetcd.Config{Dir: t.TempDir()})
		if err != nil {
			t.Fatal(err)
		}
		defer srv.Close()
		conn := srv.Connect()
		cli := conn.Client()
		defer cli.Close()
		sess, err := concurrency.NewSession(cli, concurrency.WithTTL(2))
		if err != nil {
			t.Fatal(err)
		}
		defer sess.Close()

		// The first Txn of the campaign applies but its answer is held.
		var held atomic.Bool
		conn.SetInjector(func(method string) simetcd.Fault {
			if method == "Txn" && held.CompareAndSwap(false, true) {
				return simetcd.Fault{Kind: simetcd.HangApplied}
			}
			return simetcd.Fault{}
		})
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		el := election.New(sess, "/e", election.WithRequestTimeout(time.Second))
		won := make(chan error, 1)
		go func() {
			_, err := el.Campaign(ctx, "a")
			won <- err
		}()
		select {
		case err := <-won:
			if err != nil {
				t.Fatalf("Campaign: %v", err)
			}
		case <-time.After(time.Minute):
			t.Fatal("a Campaign alone in its election did not win within a minute: a request without an answer held it")
		}
		if !held.Load() {
			t.Fatal("no request was held: the test did not exercise the fault")
		}
		if err := el.Resign(context.Background()); err != nil {
			t.Fatal(err)
		}
	})
}
