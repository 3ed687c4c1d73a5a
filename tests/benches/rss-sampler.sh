#!/usr/bin/env bash
# Samples a running daemon's anonymous and file-backed resident memory every 5 s, as CSV, until
# stopped: `bash tests/benches/rss-sampler.sh /path/to/ironbridge OUT.csv &` next to a soak
# (`--bin /path/to/ironbridge --no-build`). VmRSS alone cannot tell heap from mapped binary.
set -euo pipefail
bin=$1
out=$2
echo "t_s,rss_anon_kib,rss_file_kib" >"$out"
start=$(date +%s)
while true; do
    pid=$(pgrep -f "^$bin " | head -1 || true)
    if [ -n "$pid" ] && [ -r "/proc/$pid/status" ]; then
        anon=$(awk '/^RssAnon/{print $2}' "/proc/$pid/status" 2>/dev/null || true)
        file=$(awk '/^RssFile/{print $2}' "/proc/$pid/status" 2>/dev/null || true)
        [ -n "$anon" ] && echo "$(($(date +%s) - start)),$anon,$file" >>"$out"
    fi
    sleep 5
done
