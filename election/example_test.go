package election_test

import (
	"context"
	"fmt"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"

	"github.com/baton-go/baton/election"
)

func Example() {
	endpoints, stop := startEtcd() // your etcd cluster's endpoints
	defer stop()

	cli, err := clientv3.New(clientv3.Config{Endpoints: endpoints, DialTimeout: 5 * time.Second})
	if err != nil {
		panic(err)
	}
	defer cli.Close()
	// The session's lease holds the candidacy: if this process dies, the
	// lease expires and another candidate takes over.
	session, err := concurrency.NewSession(cli, concurrency.WithTTL(5))
	if err != nil {
		panic(err)
	}
	defer session.Close()

	ctx := context.Background()
	e := election.New(session, "/my-service/leader")
	leaderCtx, err := e.Campaign(ctx, "worker-1") // blocks until elected
	if err != nil {
		panic(err)
	}
	leader, _ := e.Leader(ctx)
	fmt.Println("leader:", leader)

	// Lead until leaderCtx ends. Writes that must come from the current
	// leader only are guarded: etcd rejects them once the leadership is
	// gone, even if this process has not noticed yet.
	resp, err := cli.Txn(leaderCtx).
		If(e.Guard()).
		Then(clientv3.OpPut("/my-service/config", "v2")).
		Commit()
	if err != nil {
		panic(err)
	}
	fmt.Println("guarded write applied:", resp.Succeeded)

	if err := e.Resign(ctx); err != nil {
		panic(err)
	}
	fmt.Println("leadership ended:", context.Cause(leaderCtx))
	_, err = e.Leader(ctx)
	fmt.Println(err)
	// Output:
	// leader: worker-1
	// guarded write applied: true
	// leadership ended: election: resigned
	// election: no leader
}
