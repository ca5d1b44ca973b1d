package cli

import (
	"context"
	"encoding/json"
)

// getList is the shared part of the read-only list commands (agents,
// token list, agent token list, certs revoked): the client flags and
// -json, no arguments, one GET of path. With -json it prints the answer
// as is; otherwise it decodes it into out (what names the items in the
// error). done reports that the command has finished with code.
func getList(m Meta, name, help, path, what string, args []string, out any) (code int, done bool) {
	var cf clientFlags
	fs := m.flagSet(name)
	cf.register(fs)
	asJSON := fs.Bool("json", false, "")
	if code, ok := m.parse(fs, args, help); !ok {
		return code, true
	}
	if fs.NArg() > 0 {
		return usageError(m, name, "unexpected argument %q", fs.Arg(0)), true
	}
	client, err := newClient(m, &cf)
	if err != nil {
		return m.errorf("%v", err), true
	}
	defer client.close()
	var raw json.RawMessage
	if err := client.do(context.Background(), "GET", path, nil, &raw); err != nil {
		return m.errorf("%v", err), true
	}
	if *asJSON {
		writeRawJSON(m.Stdout, raw)
		return ExitOK, true
	}
	if err := json.Unmarshal(raw, out); err != nil {
		return m.errorf("the controller's answer is not a list of %s: %v", what, err), true
	}
	return ExitOK, false
}
