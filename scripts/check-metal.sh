#!/bin/bash
# Type-checks `autonomy-pipeline --features metal` (candle's Metal backend) for Apple silicon
# (aarch64-apple-darwin) on this Linux machine, with every target: tests and benches too. Nothing
# is linked or run: there is no macOS SDK here, so the C that build scripts compile
# (mimalloc, …) is replaced by empty objects, which only a link would notice. Needs the
# target's standard library (`rustup target add aarch64-apple-darwin`, from static.rust-lang.org;
# not part of CI).
set -euo pipefail
cd "$(dirname "$0")/.."
rustup target list --installed | grep -qx aarch64-apple-darwin ||
  rustup target add aarch64-apple-darwin
fake=$(mktemp -d)
trap 'rm -rf "$fake"' EXIT
cat > "$fake/cc" <<'EOF'
#!/bin/sh
# An empty host object wherever a build script asks for one.
out=""; prev=""
for a in "$@"; do
  [ "$prev" = "-o" ] && out=$a
  case "$a" in -o?*) out=${a#-o};; esac
  prev=$a
done
[ -n "$out" ] && exec gcc -c -x c /dev/null -o "$out"
exit 0
EOF
cat > "$fake/ar" <<EOF
#!/bin/sh
# An archive of one empty host object wherever a build script asks for one.
[ -n "\$2" ] || exit 0
gcc -c -x c /dev/null -o "$fake/empty.o" && rm -f "\$2" && exec ar cq "\$2" "$fake/empty.o"
EOF
chmod +x "$fake/cc" "$fake/ar"
CC_aarch64_apple_darwin=$fake/cc CXX_aarch64_apple_darwin=$fake/cc \
  AR_aarch64_apple_darwin=$fake/ar SDKROOT=$fake CARGO_TARGET_DIR=target/mac \
  cargo check --target aarch64-apple-darwin -p autonomy-pipeline --features metal --all-targets
