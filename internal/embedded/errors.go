package embedded

import "errors"

// ErrStartTimeout is returned by [Start] when the server is not ready within
// the start timeout (see [WithStartTimeout]).
var ErrStartTimeout = errors.New("embedded: etcd did not become ready in time")
