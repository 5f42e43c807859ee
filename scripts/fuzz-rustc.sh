#!/usr/bin/env bash
# RUSTC_WRAPPER for scripts/fuzz.sh: adds the coverage instrumentation ($FUZZ_INSTRUMENT) to
# the crates being fuzzed (this node's library, the fuzz targets, and prost, whose decoding
# the wire target drives) and to nothing else. Build scripts and proc macros (compiled for
# the host, without --target) are never instrumented, as with cargo fuzz.
set -euo pipefail
rustc=$1
shift
case " $* " in
  *" --target "*) ;;
  *) exec "$rustc" "$@" ;;
esac
case " $* " in
  *" --crate-name kademlia "* | *" --crate-name wire "* | *" --crate-name core_messages "* | \
    *" --crate-name prost "*)
    # shellcheck disable=SC2086 # a list of flags
    exec "$rustc" "$@" $FUZZ_INSTRUMENT
    ;;
esac
exec "$rustc" "$@"
