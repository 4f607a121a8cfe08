package coordinator_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/baton-go/baton/assignment"
	"github.com/baton-go/baton/coordinator"
)

// TestOuterLeaderLeavesANestedGroupAlone: a group whose prefix lies under
// another group's targets/ directory (prefix "/baton/<g>/targets", group
// "x": valid for ValidatePrefix and keys.New) has all its keys under
// "/baton/<g>/targets/x/". The outer leader reads them as stray keys of a
// member "x" and, as "x" is no member of its own group, deletes
// targets/x/ with a prefix: the nested group's specs (and its member,
// owner, election and checkpoint keys) are gone.
func TestOuterLeaderLeavesANestedGroupAlone(t *testing.T) {
	w := newWorld(t, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	inner := coordinator.NewSyncStore(w.admin, "x", coordinator.WithPrefix(coordinator.DefaultPrefix+"/"+w.group+"/targets"))
	require.NoError(t, inner.Put(ctx, assignment.Sync{ID: "inner-sync", Spec: []byte(`{"v":1}`)}))

	w.putSyncs("s000")
	w.join("m1", nil, nil)
	w.waitOwned([]string{"s000"}, 10*time.Second, "m1")

	got, err := inner.List(ctx)
	require.NoError(t, err)
	require.Len(t, got, 1, "the nested group's syncs after one round of the outer leader")
}
