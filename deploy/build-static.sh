#!/usr/bin/env bash
# Builds fully static whimp and whomp binaries, proves they are static, and runs each once.
#
# Usage: deploy/build-static.sh [--check-only]
#   (no option)    build with `cargo build --release`, then check and print the binaries
#   --check-only   only check that this machine can build them (target, static C library, tools)
#
# The target is x86_64-unknown-linux-musl when that Rust target is installed, otherwise
# x86_64-unknown-linux-gnu with `-C target-feature=+crt-static` (glibc linked statically).
# Set TARGET to choose. The binaries end up in target/<TARGET>/release/.
#
# Name resolution: whomp resolves names with its own DNS client (netguard reads /etc/resolv.conf
# and /etc/hosts itself), so it does not need glibc's NSS modules at run time. Any code that calls
# getaddrinfo in a glibc static binary would need the libnss_* libraries of the very glibc it was
# linked with; the linker warns about that, and this script prints such warnings and says which
# binary contains the call.
set -euo pipefail
cd "$(dirname "$0")/.."

check_only=
case "${1:-}" in
    "") ;;
    --check-only) check_only=1 ;;
    -h | --help)
        sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'
        exit 0
        ;;
    *)
        echo "build-static: unknown argument $1 (try --help)" >&2
        exit 64
        ;;
esac

fail() {
    echo "build-static: $*" >&2
    exit 1
}

installed=$(rustup target list --installed 2>/dev/null || rustc -vV | sed -n 's/^host: //p')
if [ -z "${TARGET:-}" ]; then
    if grep -qx x86_64-unknown-linux-musl <<<"$installed"; then
        TARGET=x86_64-unknown-linux-musl
    else
        TARGET=x86_64-unknown-linux-gnu
    fi
fi
grep -qx "$TARGET" <<<"$installed" || fail "Rust target $TARGET is not installed (rustup target add $TARGET)"
flags="-C target-feature=+crt-static"
rustc --print cfg --target "$TARGET" $flags | grep -qx 'target_feature="crt-static"' ||
    fail "target $TARGET cannot link the C library statically"
for tool in file ldd cc; do
    command -v "$tool" >/dev/null || fail "$tool is needed"
done
if [ "$TARGET" = x86_64-unknown-linux-gnu ]; then
    # The static glibc comes with the C development package (Debian: libc6-dev).
    libc_a=$(cc -print-file-name=libc.a)
    [ -f "$libc_a" ] || fail "no static glibc (libc.a); install libc6-dev"
fi
echo "target: $TARGET  RUSTFLAGS=\"$flags\""
if [ -n "$check_only" ]; then
    echo "build-static: this machine can build static binaries (check only, nothing built)"
    exit 0
fi

log=$(mktemp)
trap 'rm -f "$log"' EXIT
# With --target, RUSTFLAGS apply to the binaries only, not to build scripts and proc macros
# (which must stay dynamic to be loaded by the compiler).
set -x
RUSTFLAGS="$flags" cargo build --release --locked --target "$TARGET" --bin whimp --bin whomp 2>&1 |
    tee "$log"
{ set +x; } 2>/dev/null

echo
echo "== link warnings in the build output"
if grep -iE 'statically linked applications requires|warning: .*linker' "$log"; then
    echo "(see above)"
else
    echo "none shown (rustc hides linker messages unless -W linker-messages; see each binary below)"
fi

dir="target/$TARGET/release"
echo
for bin in whimp whomp; do
    path="$dir/$bin"
    [ -x "$path" ] || fail "$path was not built"
    echo "== $path"
    description=$(file -b "$path")
    echo "file: $description"
    case "$description" in
        *"statically linked"* | *"static-pie linked"*) ;;
        *) fail "$path is not statically linked" ;;
    esac
    ldd_out=$(ldd "$path" 2>&1 || true)
    echo "ldd: $ldd_out"
    case "$ldd_out" in
        *"not a dynamic executable"* | *"statically linked"*) ;;
        *) fail "ldd finds shared libraries in $path" ;;
    esac
    # Static glibc keeps the linker's warning for each function that loads NSS modules at run
    # time (getaddrinfo, getpwnam, ...) in a .gnu.warning section: the binary names them itself.
    # A musl binary has no such section: grep finds nothing, which is not a failure.
    nss=$({ grep -aoE "Using '[a-z0-9_]+' in statically linked applications" "$path" || true; } |
        sed "s/Using '\([a-z0-9_]*\)'.*/\1/" | sort -u | tr '\n' ' ')
    if [ -n "$nss" ]; then
        echo "nss: glibc functions that load libnss_*.so.2 at run time are linked in: ${nss}(a call needs the build host's glibc version installed)"
    else
        echo "nss: none linked"
    fi
    echo "version: $("$path" --version)"
    echo "size: $(stat -c %s "$path") bytes ($(du -h "$path" | cut -f1))"
    echo
done
echo "build-static: ok; copy $dir/whimp and $dir/whomp to /usr/local/bin on the target host"
