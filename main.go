// Command jobsuite runs shell jobs on remote worker hosts: the controller,
// the agent, and the client commands are all subcommands of this binary.
package main

import (
	"os"

	"jobsuite/cli"
)

func main() {
	os.Exit(cli.Run(os.Args[1:]))
}
