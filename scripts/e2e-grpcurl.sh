#!/usr/bin/env bash
# End to end through the real binaries with the real grpcurl: starts the mesh (auth, graph,
# execution, gateway) on free ports with a throw-away data directory, then runs every command block of
# README.md marked `<!-- e2e expect="..." -->` (output must contain the text, exit 0) or
# `<!-- e2e expect-fail="..." -->` (must fail and print the text), in order, in ONE shell, so
# variables set by one block (the token) are seen by the next.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/bin-dir.sh

GRPCURL=$(realpath "${GRPCURL:-.venv/bin/grpcurl}")
[ -x "$GRPCURL" ] || { echo "e2e: $GRPCURL missing (run: make tools)" >&2; exit 1; }

# The mesh on free ports with a throw-away data directory ($work, $data, $gw_port), stopped on
# exit; shared with e2e-python.sh.
source scripts/e2e-mesh.sh
start_mesh

# Patterns are quoted with " or ' (use ' when the pattern holds a ").
# README.md → one script: each case runs in this shell (braces, not a subshell) and is checked.
python3 - "$work/cases.sh" "$GRPCURL" "$gw_port" "$data" <<'PY'
import re, sys, shlex
out, grpcurl, port, data = sys.argv[1:5]
text = open("README.md").read()
cases = [(k, dq if q.startswith('"') else sq, body) for k, q, dq, sq, body in
         re.findall(r'<!-- e2e (expect|expect-fail)=((?=")"([^"]*)"|(?=\')\'([^\']*)\') -->\s*```(?:sh|bash)\n(.*?)```', text, re.S)]
if len(cases) < 8:
    sys.exit(f"e2e: expected at least 8 marked command blocks in README.md, found {len(cases)}")
lines = ["passed=0; failed=0", "check() { # kind pattern rc file",
         '  if { [ "$1" = expect ] && [ "$3" = 0 ]; } || { [ "$1" = expect-fail ] && [ "$3" != 0 ]; }; then',
         '    if [ -z "$2" ] || grep -qF -- "$2" "$4"; then passed=$((passed+1)); echo "e2e: ok   $5"; return; fi; fi',
         '  failed=$((failed+1)); echo "e2e: FAIL $5 ($1 \\"$2\\", exit $3)"; head -30 "$4"; }']
for i, (kind, pattern, body) in enumerate(cases):
    body = body.replace("localhost:50051", f"127.0.0.1:{port}").replace("data/", f"{data}/")
    body = re.sub(r'(^|[\s(])grpcurl ', lambda m: m.group(1) + grpcurl + " ", body)
    title = " ".join(body.split())[:90].replace(grpcurl, "grpcurl").replace("'", "")
    lines.append(f"{{\n{body}\n}} > out.{i} 2>&1; check {shlex.quote(kind)} {shlex.quote(pattern)} $? out.{i} {shlex.quote(title)}")
lines.append('echo "grpcurl: $passed passed, $failed failed"')
lines.append('[ "$failed" = 0 ]')
open(out, "w").write("\n".join(lines) + "\n")
print(f"e2e: {len(cases)} README command blocks", file=sys.stderr)
PY
cd "$work" && set +e && bash "$work/cases.sh"
