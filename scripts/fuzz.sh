#!/usr/bin/env bash
# Runs every fuzz target for FUZZTIME (default 150000x: that many inputs,
# about 10 s each here) and prints how many inputs each tried. A crasher
# fails the run; Go writes it to the package's testdata/fuzz/<target>/,
# where it joins the corpus the unit tests replay.
#
# The budget is a count, not a duration: with -fuzztime=<duration>, Go 1.26's
# fuzz coordinator can report its own deadline as a failure ("context
# deadline exceeded", no crasher; golang/go#75804, fixed in Go 1.27). A
# duration still works (FUZZTIME=30s) where the toolchain has the fix.
set -euo pipefail
cd "$(dirname "$0")/.."
FUZZTIME=${FUZZTIME:-150000x}
targets=(
	"./internal/netconf FuzzParse"
	"./internal/azure/wireserver FuzzParse"
	"./internal/azure/imds FuzzParse"
	"./internal/ipam FuzzParseMAS"
	"./internal/store FuzzDecode"
)
summary=()
status=0
for t in "${targets[@]}"; do
	read -r pkg fn <<<"$t"
	log=$(mktemp)
	echo "== $fn in $pkg, -fuzztime $FUZZTIME"
	if go test -run '^$' -fuzz "^${fn}\$" -fuzztime "$FUZZTIME" "$pkg" 2>&1 | tee "$log"; then
		result=ok
	else
		result=FAILED
		status=1
	fi
	# "fuzz: elapsed: 12s, execs: 88426 (5969/sec), new interesting: ..."
	execs=$(grep -o 'execs: [0-9]*' "$log" | tail -1 | cut -d' ' -f2)
	summary+=("$(printf '%-28s %-12s %12s execs  %s' "$pkg" "$fn" "${execs:-0}" "$result")")
	rm -f "$log"
done
echo
echo "fuzzing, -fuzztime $FUZZTIME per target:"
printf '  %s\n' "${summary[@]}"
exit $status
