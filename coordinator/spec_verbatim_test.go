package coordinator_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/baton-go/baton/assignment"
)

// TestSpecStoredVerbatim: List and the claim return the spec bytes that
// were Put (only surrounding whitespace is trimmed).
func TestSpecStoredVerbatim(t *testing.T) {
	w := newWorld(t, nil)
	spec := `{"b": "<x> & y",  "a" : [1, 2.50, 1e3], "u":"\u00e9"}`
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	require.NoError(t, w.store.Put(ctx, assignment.Sync{ID: "s1", Weight: 2, Labels: map[string]string{"k": "<v>"}, Spec: []byte(" \n" + spec + "\t ")}))
	list, err := w.store.List(ctx)
	require.NoError(t, err)
	require.Len(t, list, 1)
	require.Equal(t, spec, string(list[0].Spec))
	require.Equal(t, 2, list[0].Weight)
	require.Equal(t, map[string]string{"k": "<v>"}, list[0].Labels)

	m := w.join("m1", nil, nil)
	w.waitOwned([]string{"s1"}, 5*time.Second, "m1")
	owned := m.co.Owned()
	require.Len(t, owned, 1)
	require.Equal(t, spec, string(owned[0].Sync().Spec))
}
