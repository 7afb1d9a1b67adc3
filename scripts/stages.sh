# Stage headers and the stage log of the recipe scripts; sourced, not run:
#
#   source "$(dirname "$0")/stages.sh"
#   stages_log "$OUT/stage_times.tsv"
#
# Then `stage TEXT` prints a timed header and logs it, and `event TEXT` only logs it. Each line of the
# log is "unix time<TAB>event"; every invocation's start and exit (finished, failed or interrupted) are
# logged too, so a report sums each stage's wall time over resumed runs (scripts/recipe_report.py).
stages_log() {
  STAGE_LOG=$1
  trap 'event exit' EXIT
  trap 'exit 130' INT TERM
  event start
}
event() { printf '%s\t%s\n' "$(date +%s)" "$*" >> "$STAGE_LOG"; }
stage() { printf '\n=== [%s] %s\n' "$(date +%H:%M:%S)" "$*"; event "$*"; }
