//! `kademlia cert`: makes the cluster CA that peer mTLS trusts (`crate::net::tls`).
//!
//! `kademlia cert ca --dir DIR` writes `DIR/ca.pem` (the CA certificate, for `tls_ca_cert`)
//! and `DIR/ca-key.pem` (its private key, for `tls_ca_key`, readable by its owner only). With
//! `--if-missing` an existing pair is kept, so a one-shot container can run it on every
//! `docker compose up`.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Subcommand};

use crate::net::tls;

/// The CA certificate's file name inside `--dir`.
pub const CA_CERT_FILE: &str = "ca.pem";
/// The CA private key's file name inside `--dir`.
pub const CA_KEY_FILE: &str = "ca-key.pem";

#[derive(Subcommand, Debug)]
pub enum CertCommand {
    /// Make a cluster CA: DIR/ca.pem (tls_ca_cert) and DIR/ca-key.pem (tls_ca_key)
    Ca(CaArgs),
}

#[derive(Args, Debug)]
pub struct CaArgs {
    /// Directory to write the CA into (created if needed)
    #[arg(long)]
    pub dir: PathBuf,
    /// The CA's common name
    #[arg(long, default_value = "kademlia cluster CA")]
    pub name: String,
    /// Keep an existing CA in DIR instead of refusing to overwrite it
    #[arg(long)]
    pub if_missing: bool,
}

pub fn run(cmd: CertCommand) -> anyhow::Result<()> {
    match cmd {
        CertCommand::Ca(args) => make_ca(args),
    }
}

/// The CA certificate and key files inside `dir`.
pub fn ca_files(dir: &std::path::Path) -> (PathBuf, PathBuf) {
    (dir.join(CA_CERT_FILE), dir.join(CA_KEY_FILE))
}

/// Makes a CA in `dir` unless a usable one is there.
pub fn ensure_ca(dir: &std::path::Path) -> anyhow::Result<()> {
    make_ca(CaArgs {
        dir: dir.to_path_buf(),
        name: "kademlia devnet CA".into(),
        if_missing: true,
    })
}

fn make_ca(args: CaArgs) -> anyhow::Result<()> {
    let (cert, key) = ca_files(&args.dir);
    if cert.exists() || key.exists() {
        if !args.if_missing {
            anyhow::bail!(
                "{} already holds a CA; remove it first, or pass --if-missing to keep it",
                args.dir.display()
            );
        }
        tls::ClusterCa::load(&cert, &key).context("the existing CA is unusable")?;
        println!("kept the CA in {}", args.dir.display());
        return Ok(());
    }
    std::fs::create_dir_all(&args.dir)
        .with_context(|| format!("cannot create {}", args.dir.display()))?;
    let (cert_pem, key_pem) = tls::generate_ca(&args.name)?;
    tls::write_private(&key, &key_pem)?;
    std::fs::write(&cert, cert_pem).with_context(|| format!("cannot write {}", cert.display()))?;
    println!(
        "made a CA: tls_ca_cert={} tls_ca_key={}",
        cert.display(),
        key.display()
    );
    Ok(())
}
