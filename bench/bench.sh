#!/usr/bin/env bash
# Runs the benchmark harness (bench/Motr.Bench) after installing what its peers need, when missing:
# LMDB's library (Debian package liblmdb0) for `btree`. SQLite comes with the NuGet packages.
# usage: bench/bench.sh <command> [options]      e.g.  bench/bench.sh btree --quick
set -euo pipefail
cd "$(dirname "$0")/.."

if [ ! -e /usr/lib/x86_64-linux-gnu/liblmdb.so.0 ] && ! { command -v ldconfig >/dev/null && ldconfig -p | grep -q 'liblmdb\.so\.0 '; }; then
    sudo=""
    [ "$(id -u)" -ne 0 ] && sudo="sudo"
    echo "bench.sh: installing liblmdb0 (LMDB, a peer of the btree bench)" >&2
    if ! out=$($sudo apt-get update -qq 2>&1 && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq liblmdb0 2>&1); then
        echo "$out" >&2
        echo "bench.sh: could not install liblmdb0 (apt-get install -y liblmdb0)" >&2
        exit 1
    fi
fi

exec dotnet run -c Release --project bench/Motr.Bench -- "$@"
