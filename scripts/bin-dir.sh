# Sourced by the scripts that start the binaries cargo built. Cargo decides where they go
# (CARGO_TARGET_DIR, build.target-dir in a cargo config, or ./target), so ask cargo instead of
# assuming `target/`. BIN_DIR, when set, wins; PROFILE (default debug) picks the profile.
bin_dir() {
  if [ -n "${BIN_DIR:-}" ]; then
    realpath "$BIN_DIR"
    return
  fi
  local target
  target=$(${CARGO:-cargo} metadata --format-version 1 --no-deps 2>/dev/null |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])') || {
    echo "cannot ask cargo where it builds (cargo metadata failed); set BIN_DIR" >&2
    return 1
  }
  echo "$target/${PROFILE:-debug}"
}
