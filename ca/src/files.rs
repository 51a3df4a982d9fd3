//! Reading and writing PEM files. Every error names the file; keys are
//! written 0600 and nothing is overwritten unless the caller says so.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use rustls_pki_types::pem::{self as pki_pem, PemObject, SectionKind};
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::CaError;

/// File mode for private keys.
pub const KEY_MODE: u32 = 0o600;
/// File mode for certificates and bundles.
pub const PUBLIC_MODE: u32 = 0o644;

/// Whether writing may replace an existing file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Overwrite {
    Never,
    Replace,
}

pub(crate) fn read(path: &Path) -> Result<Vec<u8>, CaError> {
    fs::read(path).map_err(|source| CaError::Io {
        path: path.to_owned(),
        source,
    })
}

fn pem_error(path: &Path, err: pki_pem::Error) -> CaError {
    let reason = match err {
        pki_pem::Error::MissingSectionEnd { end_marker } => format!(
            "truncated PEM: no \"{}\" line",
            String::from_utf8_lossy(&end_marker)
        ),
        pki_pem::Error::IllegalSectionStart { line } => format!(
            "malformed PEM header line {:?}",
            String::from_utf8_lossy(&line)
        ),
        pki_pem::Error::Base64Decode(e) => format!("PEM body is not valid base64: {e}"),
        pki_pem::Error::NoItemsFound => "no PEM section found".to_owned(),
        other => format!("unreadable PEM: {other}"),
    };
    CaError::Pem {
        path: path.to_owned(),
        reason,
    }
}

/// Parses every CERTIFICATE section of a PEM file, checking each is real
/// X.509 (not merely base64), and refusing files that hold none.
pub fn certificates_from_pem(
    path: &Path,
    bytes: &[u8],
) -> Result<Vec<CertificateDer<'static>>, CaError> {
    let mut certs = Vec::new();
    for item in <(SectionKind, Vec<u8>)>::pem_slice_iter(bytes) {
        let (kind, der) = item.map_err(|e| pem_error(path, e))?;
        if kind != SectionKind::Certificate {
            continue;
        }
        let index = certs.len() + 1;
        if let Err(e) = x509_parser::parse_x509_certificate(&der) {
            return Err(CaError::BadCertificate {
                path: path.to_owned(),
                index,
                reason: e.to_string(),
            });
        }
        certs.push(CertificateDer::from(der));
    }
    if certs.is_empty() {
        return Err(CaError::Pem {
            path: path.to_owned(),
            reason: "no \"BEGIN CERTIFICATE\" section found".to_owned(),
        });
    }
    Ok(certs)
}

/// Reads a PEM file of one or more certificates.
pub fn read_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, CaError> {
    certificates_from_pem(path, &read(path)?)
}

/// Reads a PEM private key (PKCS#8, SEC1 or PKCS#1) as rcgen can sign with it.
pub fn read_key_pair(path: &Path) -> Result<rcgen::KeyPair, CaError> {
    let der = read_private_key(path)?;
    rcgen::KeyPair::try_from(&der).map_err(|e| CaError::BadKey {
        path: path.to_owned(),
        reason: e.to_string(),
    })
}

/// Reads a PEM private key as rustls takes it.
pub fn read_private_key(path: &Path) -> Result<PrivateKeyDer<'static>, CaError> {
    let bytes = read(path)?;
    private_key_from_pem(path, &bytes)
}

/// Parses a PEM private key; `path` names the source in errors.
pub fn private_key_from_pem(path: &Path, bytes: &[u8]) -> Result<PrivateKeyDer<'static>, CaError> {
    PrivateKeyDer::from_pem_slice(bytes).map_err(|e| match e {
        pki_pem::Error::NoItemsFound => CaError::Pem {
            path: path.to_owned(),
            reason: "no \"BEGIN PRIVATE KEY\" section found".to_owned(),
        },
        other => pem_error(path, other),
    })
}

/// Writes `contents` to `path` with `mode`. With [`Overwrite::Never`] an
/// existing file is an error; with [`Overwrite::Replace`] the new content is
/// written beside it and renamed over it, so a reader never sees half a file.
pub fn write(path: &Path, contents: &[u8], mode: u32, overwrite: Overwrite) -> Result<(), CaError> {
    let io_err = |p: &Path| {
        let p = p.to_owned();
        move |source| CaError::Io { path: p, source }
    };
    match overwrite {
        Overwrite::Never => {
            let mut file = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(mode)
                .open(path)
                .map_err(|source| {
                    if source.kind() == std::io::ErrorKind::AlreadyExists {
                        CaError::FileExists {
                            path: path.to_owned(),
                        }
                    } else {
                        CaError::Io {
                            path: path.to_owned(),
                            source,
                        }
                    }
                })?;
            file.write_all(contents).map_err(io_err(path))?;
            file.sync_all().map_err(io_err(path))
        }
        Overwrite::Replace => {
            let tmp = temp_sibling(path);
            let _ = fs::remove_file(&tmp);
            let mut file = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(mode)
                .open(&tmp)
                .map_err(io_err(&tmp))?;
            file.write_all(contents).map_err(io_err(&tmp))?;
            file.sync_all().map_err(io_err(&tmp))?;
            fs::rename(&tmp, path).map_err(io_err(path))
        }
    }
}

/// One file of a set written together.
pub struct Output {
    pub path: PathBuf,
    pub contents: String,
    pub mode: u32,
}

/// Writes a set of files that belong together (a key and its certificate).
/// With [`Overwrite::Never`] nothing is written if any of them exists.
pub fn write_set(outputs: &[Output], overwrite: Overwrite) -> Result<(), CaError> {
    if overwrite == Overwrite::Never
        && let Some(existing) = outputs.iter().find(|o| o.path.exists())
    {
        return Err(CaError::FileExists {
            path: existing.path.clone(),
        });
    }
    for out in outputs {
        write(&out.path, out.contents.as_bytes(), out.mode, overwrite)?;
    }
    Ok(())
}

fn temp_sibling(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".tmp{}", std::process::id()));
    path.with_file_name(name)
}

/// Creates a directory (and its parents) for output, naming it on failure.
pub fn create_dir(dir: &Path) -> Result<(), CaError> {
    fs::create_dir_all(dir).map_err(|source| CaError::Io {
        path: dir.to_owned(),
        source,
    })
}

/// Fails unless files can be created in `dir` (or, when it does not exist
/// yet, in the nearest ancestor that does, where it would be made), without
/// creating anything that stays: callers that spend something before they
/// write (a join token's use) ask first.
pub fn check_writable_dir(dir: &Path) -> Result<(), CaError> {
    let io = |path: &Path, source| CaError::Io {
        path: path.to_owned(),
        source,
    };
    let mut existing = dir;
    while fs::symlink_metadata(existing).is_err() {
        match existing.parent() {
            Some(p) if !p.as_os_str().is_empty() => existing = p,
            _ => {
                existing = Path::new(".");
                break;
            }
        }
    }
    if !existing.is_dir() {
        let reason = std::io::Error::new(std::io::ErrorKind::NotADirectory, "not a directory");
        return Err(io(existing, reason));
    }
    let probe = existing.join(format!(".strait-write-check.{}", std::process::id()));
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&probe)
        .map_err(|e| io(existing, e))?;
    fs::remove_file(&probe).map_err(|e| io(&probe, e))
}

/// PEM text for a list of DER certificates, in order.
pub fn certificates_to_pem(certs: &[CertificateDer<'_>]) -> String {
    certs.iter().map(|c| certificate_to_pem(c)).collect()
}

pub(crate) fn certificate_to_pem(der: &[u8]) -> String {
    const LF: pem::EncodeConfig = pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF);
    pem::encode_config(&pem::Pem::new("CERTIFICATE", der.to_vec()), LF)
}
