#!/usr/bin/env bash
# bench/proto.sh: encode/decode speed of every proto message (bench/proto).
# Run by `scripts/bench proto` after it built $TML_BUILD_DIR (Release).
set -euo pipefail
build=${TML_BUILD_DIR:-build-bench}
bin="$build/bench/proto/proto_bench"
if [ ! -x "$bin" ]; then
    echo "bench/proto.sh: $bin not built" >&2
    exit 1
fi
exec "$bin" "${TML_BENCH_PROTO_SECONDS:-0.2}"
