#!/usr/bin/env bash
# Builds ctxguard's driver package on Linux (the no-WDK path):
#
#   <target dir>/package/
#     x64/ctxguard.sys     x64/ctxguard.inf      test-signed, stamped for amd64
#     arm64/ctxguard.sys   arm64/ctxguard.inf    test-signed, stamped for arm64
#     ctxguard.exe                                the companion CLI (x86_64-pc-windows-gnu)
#     ctxguard-test.cer                           the test certificate (DER) to trust on a VM
#
# <target dir> is $CARGO_TARGET_DIR, else ./target. The .sys files in the package are the
# signed ones; the unsigned images stay in the cargo target directory. Each architecture's
# directory is a self-contained driver package (INF beside its .sys), as stampinf and inf2cat
# produce on Windows. No catalog: inf2cat is Windows-only (see README, "Windows/eWDK path").
#
# The test certificate and key are made on first use in $CTXGUARD_TEST_CERT_DIR
# (default ~/.ctxguard-test-cert), outside the repository, and reused afterwards so a VM
# that trusts the certificate keeps trusting new builds.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
cargo=${CARGO:-cargo}
target_dir=${CARGO_TARGET_DIR:-$root/target}
package_dir=${CTXGUARD_PACKAGE_DIR:-$target_dir/package}
cert_dir=${CTXGUARD_TEST_CERT_DIR:-$HOME/.ctxguard-test-cert}

log() { printf 'package: %s\n' "$*" >&2; }

for tool in osslsigncode openssl; do
    command -v "$tool" >/dev/null 2>&1 || { log "$tool is missing (./make.sh installs it)"; exit 1; }
done

# --- the crate version (DriverVer) ---------------------------------------------------------
package_id=$("$cargo" pkgid -p ctxguard)
version=${package_id##*[#@]}

# --- build ---------------------------------------------------------------------------------
log "building ctxguard.sys (x64, arm64) and the companion"
"$cargo" build --release -p ctxguard --target x86_64-pc-windows-msvc --target aarch64-pc-windows-msvc
"$cargo" build --release -p ctxguard-companion --target x86_64-pc-windows-gnu

# --- test certificate ----------------------------------------------------------------------
# Made in a scratch directory and moved into place in one rename, so two packaging runs at
# once never see half a certificate.
if [[ ! -s $cert_dir/ctxguard-test.pem || ! -s $cert_dir/ctxguard-test.key ]]; then
    log "creating the test signing certificate in $cert_dir"
    mkdir -p "$(dirname "$cert_dir")"
    scratch=$(mktemp -d "${cert_dir}.new.XXXXXX")
    cat >"$scratch/openssl.cnf" <<'CNF'
[req]
distinguished_name = subject
x509_extensions = code_signing
prompt = no

[subject]
CN = ctxguard test signing (not for release)
O = ctxguard

[code_signing]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = codeSigning
subjectKeyIdentifier = hash
CNF
    (umask 077 && openssl req -x509 -newkey rsa:3072 -sha256 -days 3650 -nodes \
        -config "$scratch/openssl.cnf" \
        -keyout "$scratch/ctxguard-test.key" -out "$scratch/ctxguard-test.pem" 2>/dev/null)
    rm -f "$scratch/openssl.cnf"
    if ! mv -T "$scratch" "$cert_dir" 2>/dev/null; then
        # Another run won the race (or an incomplete directory exists): keep a complete one.
        if [[ -s $cert_dir/ctxguard-test.pem && -s $cert_dir/ctxguard-test.key ]]; then
            rm -rf "$scratch"
        else
            rm -rf "$cert_dir" && mv -T "$scratch" "$cert_dir"
        fi
    fi
    chmod 700 "$cert_dir"
fi
cert=$cert_dir/ctxguard-test.pem
key=$cert_dir/ctxguard-test.key

# --- assemble into a scratch directory, then swap it in -------------------------------------
mkdir -p "$(dirname "$package_dir")"
staging=$(mktemp -d "${package_dir}.staging.XXXXXX")
trap 'rm -rf "$staging"' EXIT
chmod 755 "$staging"

openssl x509 -in "$cert" -outform DER -out "$staging/ctxguard-test.cer"
cp "$target_dir/x86_64-pc-windows-gnu/release/ctxguard.exe" "$staging/ctxguard.exe"

for pair in x64:x86_64-pc-windows-msvc:amd64 arm64:aarch64-pc-windows-msvc:arm64; do
    IFS=: read -r directory triple inf_arch <<<"$pair"
    mkdir -p -m 755 "$staging/$directory"
    # The linker names a cdylib .dll; a kernel driver is the same image named .sys.
    unsigned=$target_dir/$triple/release/ctxguard.dll
    signed=$staging/$directory/ctxguard.sys
    # Authenticode SHA-256 with page hashes (the kernel checks pages as they are paged in).
    # No timestamp: the build has no network, and a test signature need not outlive the cert.
    osslsigncode sign -certs "$cert" -key "$key" -h sha256 -ph \
        -n "ctxguard file-system minifilter" -in "$unsigned" -out "$signed" >/dev/null
    osslsigncode verify -CAfile "$cert" -in "$signed" >"$staging/verify-$directory.log" 2>&1 || {
        cat "$staging/verify-$directory.log" >&2
        log "signature check failed for $directory/ctxguard.sys"
        exit 1
    }
    rm -f "$staging/verify-$directory.log"
    scripts/stampinf.sh inf/ctxguard.inx "$staging/$directory/ctxguard.inf" "$inf_arch" "$version"
done

rm -rf "$package_dir"
mv -T "$staging" "$package_dir"
trap - EXIT
log "wrote $package_dir (ctxguard $version)"
