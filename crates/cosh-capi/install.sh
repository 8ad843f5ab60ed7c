#!/usr/bin/env bash
# Installs libcosh for C programs under PREFIX (default /usr/local): cosh.h in include/, the
# static and shared libraries in lib/ (libcosh.a, libcosh.so.0 and its libcosh.so link), and
# lib/pkgconfig/cosh.pc, so that `pkg-config --cflags --libs cosh` gives what a build needs.
# Builds the libraries (release) first, unless COSH_LIB_DIR names a folder holding built ones.
# Usage: crates/cosh-capi/install.sh [PREFIX]
set -euo pipefail
prefix=${1:-/usr/local}
here=$(cd "$(dirname "$0")" && pwd)
libs=${COSH_LIB_DIR:-}
if [ -z "$libs" ]; then
  (cd "$here/../.." && cargo build --release -p cosh-capi)
  libs="$here/../../target/release"
fi
for f in libcosh_capi.a libcosh_capi.so; do
  [ -f "$libs/$f" ] || { echo "error: $libs/$f is missing" >&2; exit 1; }
done
version=$(sed -n 's/^version *= *"\(.*\)"/\1/p' "$here/../../Cargo.toml" | head -n 1)
install -d "$prefix/include" "$prefix/lib/pkgconfig"
install -m 644 "$here/include/cosh.h" "$prefix/include/cosh.h"
install -m 644 "$libs/libcosh_capi.a" "$prefix/lib/libcosh.a"
install -m 755 "$libs/libcosh_capi.so" "$prefix/lib/libcosh.so.0"
ln -sf libcosh.so.0 "$prefix/lib/libcosh.so"
sed -e "s|@PREFIX@|$prefix|g" -e "s|@VERSION@|${version:-0}|g" "$here/cosh.pc.in" \
  > "$prefix/lib/pkgconfig/cosh.pc"
echo "installed libcosh under $prefix (pkg-config: PKG_CONFIG_PATH=$prefix/lib/pkgconfig)"
