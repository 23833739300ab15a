//! Throwaway TLS certificates for a test server, made with the `openssl` command-line tool.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// A test certificate authority and a server certificate it signed for `localhost` and
/// `127.0.0.1`, as PEM files in one directory.
#[derive(Debug, Clone)]
pub(crate) struct TestCertificates {
    pub(crate) ca: PathBuf,
    pub(crate) server_certificate: PathBuf,
    pub(crate) server_key: PathBuf,
}

/// Writes a fresh CA and server certificate (P-256, valid two days) into `dir`.
pub(crate) fn generate(dir: &Path) -> io::Result<TestCertificates> {
    let file = |name: &str| dir.join(name);
    let (ca, ca_key) = (file("ca.crt"), file("ca.key"));
    let (server_certificate, server_key, request) =
        (file("server.crt"), file("server.key"), file("server.csr"));
    let extensions = file("server.ext");
    fs::write(
        &extensions,
        "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\n\
         keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth,clientAuth\n",
    )?;
    let p256 = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    openssl(
        Command::new("openssl")
            .args([
                "req",
                "-x509",
                "-days",
                "2",
                "-subj",
                "/CN=floodwall test CA",
            ])
            .args(p256)
            .args(["-addext", "basicConstraints=critical,CA:TRUE"])
            .args(["-addext", "keyUsage=critical,keyCertSign,cRLSign"])
            .arg("-keyout")
            .arg(&ca_key)
            .arg("-out")
            .arg(&ca),
    )?;
    openssl(
        Command::new("openssl")
            .args(["req", "-subj", "/CN=localhost"])
            .args(p256)
            .arg("-keyout")
            .arg(&server_key)
            .arg("-out")
            .arg(&request),
    )?;
    openssl(
        Command::new("openssl")
            .args(["x509", "-req", "-days", "2", "-CAcreateserial"])
            .arg("-in")
            .arg(&request)
            .arg("-CA")
            .arg(&ca)
            .arg("-CAkey")
            .arg(&ca_key)
            .arg("-extfile")
            .arg(&extensions)
            .arg("-out")
            .arg(&server_certificate),
    )?;
    Ok(TestCertificates {
        ca,
        server_certificate,
        server_key,
    })
}

fn openssl(command: &mut Command) -> io::Result<()> {
    let output = command
        .stdin(Stdio::null())
        .output()
        .map_err(|error| match error.kind() {
            io::ErrorKind::NotFound => io::Error::new(
                io::ErrorKind::NotFound,
                "openssl was not found on PATH (TLS tests make their certificates with it): \
                 `sudo apt-get install -y openssl`",
            ),
            _ => error,
        })?;
    if output.status.success() {
        Ok(())
    } else {
        Err(io::Error::other(format!(
            "openssl failed: {}",
            String::from_utf8_lossy(&output.stderr)
        )))
    }
}
