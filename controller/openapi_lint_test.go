package controller

import (
	"os"
	"os/exec"
	"testing"
)

// redoclyVersion is the Redocly CLI that .ci/run installs from npm.
const redoclyVersion = "2.77.0"

// TestOpenAPILint runs Redocly's linter (its recommended rules) on
// openapi.json: an error (an operation without security, a nullable
// without a type, a broken $ref, ...) fails; warnings are printed. The
// linter is $JOBSUITE_REDOCLY, else redocly on PATH; .ci/run installs
// @redocly/cli@2.77.0 with npm. Without it the test is skipped.
func TestOpenAPILint(t *testing.T) {
	redocly := os.Getenv("JOBSUITE_REDOCLY")
	if redocly == "" {
		p, err := exec.LookPath("redocly")
		if err != nil {
			t.Skip("redocly is not installed (npm install @redocly/cli@" + redoclyVersion + ", or set JOBSUITE_REDOCLY); skipping the OpenAPI lint")
		}
		redocly = p
	}
	cmd := exec.Command(redocly, "lint", "--format=stylish", "openapi.json")
	cmd.Env = append(os.Environ(), "REDOCLY_TELEMETRY=off", "REDOCLY_SUPPRESS_UPDATE_NOTICE=true", "NO_COLOR=1")
	out, err := cmd.CombinedOutput()
	t.Logf("redocly lint openapi.json:\n%s", out)
	if err != nil {
		t.Errorf("redocly lint found errors in openapi.json (%v); see above", err)
	}
}
