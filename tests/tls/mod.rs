//! Loopback ports and test TLS material made with the `openssl` CLI
//! (shared by `tests/support`, the Dovecot harness, and `tests/mailsink`,
//! the SMTP sink).

#![allow(dead_code)]

use std::path::Path;
use std::process::Command;

/// A port that was free a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run openssl");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// In `dir`: a test CA (`ca.pem`, `ca.key`) and a leaf certificate for
/// localhost/127.0.0.1 signed by it (`{leaf}.pem`, `{leaf}.key`), both
/// valid for `days` days (P-256, fast to make). rustls refuses a CA
/// certificate used as the server's own, so the leaf says `CA:FALSE`.
pub fn make_certs(dir: &Path, leaf: &str, days: &str) {
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    let mut ca = vec!["req", "-x509"];
    ca.extend(ec);
    ca.extend([
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        days,
        "-subj",
        "/CN=xxdc-intake test CA",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
    ]);
    openssl(dir, &ca);
    let (key, csr_file, pem) = (
        format!("{leaf}.key"),
        format!("{leaf}.csr"),
        format!("{leaf}.pem"),
    );
    let mut csr = vec!["req"];
    csr.extend(ec);
    csr.extend(["-keyout", &key, "-out", &csr_file, "-subj", "/CN=localhost"]);
    openssl(dir, &csr);
    std::fs::write(
        dir.join("leaf.ext"),
        "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n\
         extendedKeyUsage=serverAuth\nsubjectAltName=DNS:localhost,IP:127.0.0.1\n",
    )
    .expect("write leaf.ext");
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            &csr_file,
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            days,
            "-extfile",
            "leaf.ext",
            "-out",
            &pem,
        ],
    );
}
