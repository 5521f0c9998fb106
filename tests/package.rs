//! The driver package as a user receives it: runs scripts/package.sh (what `./make.sh package`
//! runs) into the tests' own target directory and checks what it wrote: signed kernel images
//! for both architectures that verify against the shipped test certificate, stamped INFs, the
//! companion, and nothing else. Fast when nothing changed: the builds are no-ops and signing
//! takes milliseconds.

mod pe_support;
mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use object::pe;
use object::read::pe::{ImageNtHeaders, ImageOptionalHeader};
use pe_support::{checksum_field_offset, has_signature, machine, parse, pe_checksum};

/// `(package directory, stamped INF architecture, PE machine, Rust target)` per architecture.
const LAYOUT: [(&str, &str, u16, &str); 2] = [
    ("x64", "amd64", pe::IMAGE_FILE_MACHINE_AMD64, "x86_64-pc-windows-msvc"),
    ("arm64", "arm64", pe::IMAGE_FILE_MACHINE_ARM64, "aarch64-pc-windows-msvc"),
];

/// The cargo target directory the packaging builds into: the one `support::driver_image`
/// uses, so the driver builds are shared with the image tests.
fn target_dir() -> PathBuf {
    support::nested_target_dir().join("default")
}

fn cert_dir() -> PathBuf {
    support::nested_target_dir().join("test-cert")
}

/// Runs the packaging into `package_dir`.
fn run_packaging(package_dir: &Path) {
    let status = Command::new("bash")
        .arg(support::workspace_root().join("scripts/package.sh"))
        .env("CARGO_TARGET_DIR", target_dir())
        .env("CTXGUARD_TEST_CERT_DIR", cert_dir())
        .env("CTXGUARD_PACKAGE_DIR", package_dir)
        .status()
        .expect("bash could not be started");
    assert!(status.success(), "scripts/package.sh failed");
}

/// The package, built once per test process.
fn package() -> &'static Path {
    static PACKAGE: OnceLock<PathBuf> = OnceLock::new();
    PACKAGE.get_or_init(|| {
        let dir = target_dir().join("package");
        run_packaging(&dir);
        dir
    })
}

fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|error| panic!("reading {}: {error}", path.display()))
}

/// The shipped DER certificate as PEM, for tools that want PEM (converted once per process, so
/// tests running in parallel never read a half-written file).
fn certificate_pem() -> &'static Path {
    static PEM: OnceLock<PathBuf> = OnceLock::new();
    PEM.get_or_init(convert_certificate)
}

fn convert_certificate() -> PathBuf {
    let pem = support::nested_target_dir().join("package-test").join("ctxguard-test-from-cer.pem");
    std::fs::create_dir_all(pem.parent().expect("has a parent")).expect("scratch directory");
    let output = Command::new("openssl")
        .args(["x509", "-inform", "DER", "-in"])
        .arg(package().join("ctxguard-test.cer"))
        .arg("-out")
        .arg(&pem)
        .output()
        .expect("openssl could not be started");
    assert!(output.status.success(), "ctxguard-test.cer is not a DER certificate: {}", String::from_utf8_lossy(&output.stderr));
    pem
}

/// `osslsigncode verify` of `image` against `ca`: Ok(report) or Err(report).
fn verify_signature(image: &Path, ca: &Path) -> Result<String, String> {
    let output = Command::new("osslsigncode").arg("verify").arg("-CAfile").arg(ca).arg("-in").arg(image).output().expect("osslsigncode could not be started");
    let report = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    if output.status.success() { Ok(report) } else { Err(report) }
}

#[test]
fn package_holds_exactly_the_shipped_files() {
    let mut files: Vec<String> = walk(package()).into_iter().map(|path| path.strip_prefix(package()).expect("inside").display().to_string()).collect();
    files.sort();
    assert_eq!(
        files,
        ["arm64/ctxguard.inf", "arm64/ctxguard.sys", "ctxguard-test.cer", "ctxguard.exe", "x64/ctxguard.inf", "x64/ctxguard.sys"]
    );
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).expect("readable directory") {
        let path = entry.expect("directory entry").path();
        if path.is_dir() { files.extend(walk(&path)) } else { files.push(path) }
    }
    files
}

#[test]
fn drivers_are_signed_and_verify_against_the_shipped_certificate() {
    let ca = certificate_pem();
    for (directory, _, _, _) in LAYOUT {
        let image = package().join(directory).join("ctxguard.sys");
        let report = verify_signature(&image, ca).unwrap_or_else(|report| panic!("{directory}: {report}"));
        assert!(report.contains("SHA256"), "{directory}: not a SHA-256 signature:\n{report}");
        assert!(report.contains("Page hash"), "{directory}: no page hashes (-ph):\n{report}");
    }
}

#[test]
fn a_changed_driver_fails_verification() {
    // Proves the verification above can fail: flip one code byte of a signed copy.
    let ca = certificate_pem();
    let mut data = read(&package().join("x64/ctxguard.sys"));
    let text = parse(&data).section_table().iter().find(|section| section.raw_name().starts_with(b".text")).map(|section| section.pointer_to_raw_data.get(object::LittleEndian)).expect(".text section");
    let offset = usize::try_from(text).expect("fits") + 16;
    data[offset] ^= 0xff;
    let tampered = support::nested_target_dir().join("package-test").join("tampered.sys");
    std::fs::write(&tampered, &data).expect("writing the tampered copy");
    assert!(verify_signature(&tampered, ca).is_err(), "a modified image still verified");
}

#[test]
fn signed_drivers_are_the_built_images_for_their_architecture() {
    for (directory, _, expected_machine, triple) in LAYOUT {
        let signed = read(&package().join(directory).join("ctxguard.sys"));
        assert_eq!(machine(&signed), expected_machine, "{directory}/ctxguard.sys is built for the wrong machine");
        assert!(has_signature(&signed), "{directory}/ctxguard.sys has no security directory");
        let file = parse(&signed);
        assert_eq!(file.nt_headers().optional_header().subsystem(), pe::IMAGE_SUBSYSTEM_NATIVE);
        // Signing appends the certificate table and must leave a valid checksum behind.
        let stored = file.nt_headers().optional_header().check_sum();
        assert_eq!(stored, pe_checksum(&signed, checksum_field_offset(&file)), "{directory}: checksum invalid after signing");

        let unsigned = read(&target_dir().join(triple).join("release/ctxguard.dll"));
        assert!(!has_signature(&unsigned), "the build output itself should stay unsigned");
        assert!(signed.len() > unsigned.len());
        let headers_end = usize::try_from(parse(&unsigned).nt_headers().optional_header().size_of_headers()).expect("fits");
        assert_eq!(signed[headers_end..unsigned.len()], unsigned[headers_end..], "{directory}: signing changed the image's sections");
    }
}

#[test]
fn certificate_is_for_code_signing_and_kept_between_runs() {
    let output = Command::new("openssl")
        .args(["x509", "-noout", "-text", "-inform", "DER", "-in"])
        .arg(package().join("ctxguard-test.cer"))
        .output()
        .expect("openssl could not be started");
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success() && text.contains("Code Signing"), "the certificate lacks the code-signing EKU:\n{text}");
    assert!(text.contains("sha256WithRSAEncryption"), "{text}");

    // A VM that trusts the certificate must keep trusting new builds: packaging again reuses it.
    // (Into a second directory: the other tests are reading the first.)
    let again = target_dir().join("package-again");
    run_packaging(&again);
    assert_eq!(read(&package().join("ctxguard-test.cer")), read(&again.join("ctxguard-test.cer")), "packaging again made a new certificate");
}

#[test]
fn infs_are_stamped_for_their_architecture() {
    let version = env!("CARGO_PKG_VERSION").split(['-', '+']).next().expect("a version");
    for (directory, arch, _, _) in LAYOUT {
        let inf = String::from_utf8(read(&package().join(directory).join("ctxguard.inf"))).expect("INF is text");
        assert!(!inf.contains("$ARCH$"), "{directory}: $ARCH$ left in the INF");
        assert!(inf.contains(&format!("[DefaultInstall.NT{arch}]\r\n")), "{directory}: not stamped for {arch}");
        let driver_ver = inf.lines().find(|line| line.trim_start().starts_with("DriverVer")).expect("DriverVer line");
        let (date, stamped_version) = driver_ver.split_once('=').expect("key = value").1.trim().split_once(',').expect("date,version");
        assert_eq!(stamped_version, format!("{version}.0"), "{directory}: DriverVer version");
        let parts: Vec<u32> = date.split('/').map(|part| part.parse().expect("numeric date")).collect();
        assert!(matches!(parts.as_slice(), [month, day, year] if (1..=12).contains(month) && (1..=31).contains(day) && *year >= 2025), "{directory}: DriverVer date {date}");
    }
}

#[test]
fn companion_is_an_amd64_windows_console_program() {
    let data = read(&package().join("ctxguard.exe"));
    assert_eq!(machine(&data), pe::IMAGE_FILE_MACHINE_AMD64);
    let file = parse(&data);
    let headers = file.nt_headers();
    assert_eq!(headers.optional_header().subsystem(), pe::IMAGE_SUBSYSTEM_WINDOWS_CUI);
    assert_eq!(headers.file_header().characteristics.get(object::LittleEndian) & pe::IMAGE_FILE_DLL, 0, "the companion is an .exe, not a DLL");
}
