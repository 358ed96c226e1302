#!/usr/bin/env bash
# Profiles the insert window of the btree bench with perf: where each engine thread's CPU goes.
# The bench runs without warm-up on enough keys for a window of several seconds; sampling starts once
# the first locality has been busy for a moment (JIT tiering done), so neither the open (which may spend
# seconds faulting in fresh memory) nor the key generation is in the profile.
# usage: bench/profile.sh [--keys N] [--system motr-2loc|motr-1loc] [--seconds S] [--out DIR] [--graph]
# --graph records call stacks too and adds, for the localities, time by function including callees.
# Needs perf (Debian: linux-perf); installs it when missing and apt-get can.
set -euo pipefail
cd "$(dirname "$0")/.."

keys=3000000 system=motr-2loc seconds=2.5 out="" graph=""
while [ $# -gt 0 ]; do
    case "$1" in
        --keys) keys=$2; shift 2 ;;
        --system) system=$2; shift 2 ;;
        --seconds) seconds=$2; shift 2 ;;
        --out) out=$2; shift 2 ;;
        --graph) graph=-g; shift ;;
        -h|--help) sed -n '2,8p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "profile.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
done
case "$system" in motr-1loc|motr-2loc) ;; *) echo "profile.sh: --system must be motr-1loc or motr-2loc, not $system" >&2; exit 2 ;; esac

if ! command -v perf >/dev/null; then
    sudo=""
    [ "$(id -u)" -ne 0 ] && sudo="sudo"
    echo "profile.sh: installing perf (linux-perf)" >&2
    if ! $sudo apt-get update -qq >/dev/null 2>&1 || ! DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq linux-perf >/dev/null 2>&1 \
        || ! command -v perf >/dev/null; then
        echo "profile.sh: perf is not installed and apt-get could not install linux-perf" >&2
        exit 1
    fi
fi

out=${out:-$(mktemp -d /tmp/motr-profile-XXXXXX)}
mkdir -p "$out"
art="$out/build"
echo "profile.sh: building the bench into $art" >&2
dotnet build bench/Motr.Bench -c Release --artifacts-path "$art" -v quiet -nologo >/dev/null
dll="$art/bin/Motr.Bench/release/Motr.Bench.dll"

# A perf map of the JIT's code (/tmp/perf-PID.map, where perf looks) gives perf its symbols; with W^X on,
# code runs at other addresses than the map's.
DOTNET_PerfMapEnabled=3 DOTNET_EnableWriteXorExecute=0 dotnet "$dll" btree --workloads btree-insert --systems "$system" --keys "$keys" --warmup 0 \
    --dir "$out" >"$out/bench.txt" 2>&1 &
bench=$!
trap 'kill $bench 2>/dev/null || true' EXIT

# The window: locality 0 used at least 60 ms of CPU in 250 ms.
ticks_per_s=$(getconf CLK_TCK)
prev=-1
found=0
for _ in $(seq 1 1200); do
    sleep 0.25
    kill -0 $bench 2>/dev/null || break
    t=""
    for d in /proc/$bench/task/*; do
        if [ "$(cat "$d/comm" 2>/dev/null)" = motr-locality-0 ]; then t=$(awk '{print $14 + $15}' "$d/stat" 2>/dev/null); break; fi
    done
    [ -z "$t" ] && continue
    if [ "$prev" -ge 0 ] && [ $(( (t - prev) * 1000 / ticks_per_s )) -ge 60 ]; then found=1; break; fi
    prev=$t
done
if [ $found -eq 0 ]; then
    echo "profile.sh: the insert window was not found; the bench said:" >&2
    cat "$out/bench.txt" >&2
    exit 1
fi
sleep 2
perf record $graph -F 999 -p "$bench" -o "$out/perf.data" -- sleep "$seconds" >/dev/null 2>&1
wait $bench || { echo "profile.sh: the bench failed:" >&2; cat "$out/bench.txt" >&2; exit 1; }
trap - EXIT

grep -E "^  btree-insert|cpu per op|cpu in cores" "$out/bench.txt" || true
echo
echo "samples by thread of the bench process (${seconds} s):"
perf report -i "$out/perf.data" --no-children --percentage relative --sort comm -g none 2>/dev/null | grep -E '^ +[0-9]' | head -10 || true
for group in "localities=motr-locality-0,motr-locality-1" "placer=motr-placer" "log writer=motr-log-writer" "checkpoint=motr-checkpoint"; do
    echo
    echo "${group%%=*}: self time by function"
    perf report -i "$out/perf.data" --comm "${group#*=}" --no-children --percentage relative --sort sym -g none 2>/dev/null \
        | grep -E '^ +[0-9]' | head -15 | cut -c1-180 || true
done
if [ -n "$graph" ]; then
    echo
    echo "localities: time by function, callees included"
    perf report -i "$out/perf.data" --comm motr-locality-0,motr-locality-1 --children --percentage relative --sort sym -g none 2>/dev/null \
        | grep -E '^ +[0-9]' | grep -v -E '\] 0x[0-9a-f]+$|start_thread' | head -30 | cut -c1-180 || true
fi
echo
echo "profile.sh: perf data and the bench's output are in $out (perf report -i $out/perf.data)"
