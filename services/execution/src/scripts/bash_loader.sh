# The warm pool's Bash loader, run as `bash -c <this> <bash path>` in a sandbox whose /box is a
# host directory the service writes the request's main.sh into before it sends, on descriptor
# 3, "UMCP-RLIMITS <resource>:<soft>:<hard> …\n" and then "arg\0arg\0…". The loader lowers the
# rlimits with the ulimit builtin, reads the arguments and replaces itself with a fresh
# `<bash path> /box/main.sh arg…`: what runs is exactly a cold run's command line, so $0,
# BASH_SOURCE, LINENO, positional parameters, the environment, exit codes and signals are a
# cold run's. It writes one readiness byte first (the sandbox offers it only after that).
printf R
IFS= read -r header <&3 || exit 127
case $header in "UMCP-RLIMITS"*) ;; *) exit 127 ;; esac
for item in ${header#UMCP-RLIMITS}; do
  which=${item%%:*} rest=${item#*:}
  soft=${rest%%:*} hard=${rest#*:}
  # Linux resource numbers; ulimit's units (1024 bytes for -f, -c, -l; otherwise plain).
  case $which in
    0) flag=-t scale=1 ;;
    1) flag=-f scale=1024 ;;
    4) flag=-c scale=1024 ;;
    6) flag=-u scale=1 ;;
    7) flag=-n scale=1 ;;
    8) flag=-l scale=1024 ;;
    12) flag=-q scale=1 ;;
    *) exit 127 ;;
  esac
  # Never round: a limit ulimit cannot express exactly is refused (the service sends none).
  (( soft % scale == 0 && hard % scale == 0 )) || exit 127
  # Soft first: the new soft limit is below the old hard one, the new hard one above it.
  ulimit -S "$flag" $((soft / scale)) && ulimit -H "$flag" $((hard / scale)) || exit 127
done
args=()
while IFS= read -r -d '' arg <&3; do args+=("$arg"); done
exec 3<&-
exec "$0" /box/main.sh "${args[@]}"
