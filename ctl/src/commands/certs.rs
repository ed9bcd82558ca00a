//! `faultctl certs init|issue`: a development CA (rcgen), the agent's
//! certificate and client certificates, and the roles file beside them.
//! Keys are written 0600.

use std::{
    io::Write,
    os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _},
    path::Path,
};

use anyhow::{Context as _, bail};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

use crate::cli::certs::CertsCommand;

const DAY: time::Duration = time::Duration::days(1);

pub fn run(cmd: CertsCommand, out: &mut impl Write) -> anyhow::Result<()> {
    match cmd {
        CertsCommand::Init { dir, san } => init(&dir, &san, out),
        CertsCommand::Issue { name, role, dir } => issue(&dir, &name, role.name(), out),
    }
}

fn write(path: &Path, text: &str, mode: u32) -> anyhow::Result<()> {
    // Not through a symlink, and the mode from the start.
    let _ = std::fs::remove_file(path);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    f.write_all(text.as_bytes())?;
    Ok(())
}

fn validity(p: &mut CertificateParams, days: i32) {
    let now = time::OffsetDateTime::now_utc();
    p.not_before = now - DAY;
    p.not_after = now + DAY * days;
}

fn init(dir: &Path, extra: &[String], out: &mut impl Write) -> anyhow::Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("cannot create {}", dir.display()))?;
    if dir.join("ca.pem").exists() {
        bail!(
            "{} already holds a CA (ca.pem); remove it first or use another --dir",
            dir.display()
        );
    }
    let ca_key = KeyPair::generate()?;
    let mut ca = CertificateParams::default();
    ca.distinguished_name
        .push(DnType::CommonName, "faultline development CA");
    ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    validity(&mut ca, 3650);
    let ca_cert = ca.self_signed(&ca_key)?;
    let mut names = vec!["localhost".to_owned(), "127.0.0.1".into(), "::1".into()];
    if let Ok(h) = nix_hostname() {
        names.push(h);
    }
    names.extend(extra.iter().cloned());
    names.dedup();
    let mut agent = CertificateParams::new(names.clone())?;
    agent
        .distinguished_name
        .push(DnType::CommonName, "faultline-agent");
    agent.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    agent.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    validity(&mut agent, 825);
    let agent_key = KeyPair::generate()?;
    let issuer = Issuer::new(ca, ca_key);
    let agent_cert = agent.signed_by(&agent_key, &issuer)?;
    write(&dir.join("ca.pem"), &ca_cert.pem(), 0o644)?;
    write(
        &dir.join("ca-key.pem"),
        &issuer.key().serialize_pem(),
        0o600,
    )?;
    write(&dir.join("agent.pem"), &agent_cert.pem(), 0o644)?;
    write(
        &dir.join("agent-key.pem"),
        &agent_key.serialize_pem(),
        0o600,
    )?;
    writeln!(
        out,
        "wrote {d}/ca.pem, ca-key.pem, agent.pem, agent-key.pem (agent names: {})\n\
         next: faultctl certs issue NAME --role operator --dir {d}",
        names.join(", "),
        d = dir.display()
    )?;
    Ok(())
}

fn nix_hostname() -> anyhow::Result<String> {
    let h = std::fs::read_to_string("/proc/sys/kernel/hostname")?;
    let h = h.trim();
    anyhow::ensure!(!h.is_empty(), "no hostname");
    Ok(h.to_owned())
}

fn issue(dir: &Path, name: &str, role: &str, out: &mut impl Write) -> anyhow::Result<()> {
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.@".contains(c))
    {
        bail!("NAME {name:?}: use letters, digits and - _ . @ (it names the files too)");
    }
    let read = |f: &str| {
        std::fs::read_to_string(dir.join(f)).with_context(|| {
            format!(
                "cannot read {}/{f} (run `faultctl certs init --dir {}` first)",
                dir.display(),
                dir.display()
            )
        })
    };
    let ca_key = KeyPair::from_pem(&read("ca-key.pem")?).context("ca-key.pem")?;
    let issuer = Issuer::from_ca_cert_pem(&read("ca.pem")?, ca_key).context("ca.pem")?;
    let mut p = CertificateParams::default();
    p.distinguished_name.push(DnType::CommonName, name);
    p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    validity(&mut p, 365);
    let key = KeyPair::generate()?;
    let cert = p.signed_by(&key, &issuer)?;
    write(&dir.join(format!("{name}.pem")), &cert.pem(), 0o644)?;
    write(
        &dir.join(format!("{name}-key.pem")),
        &key.serialize_pem(),
        0o600,
    )?;
    record_role(&dir.join("roles.toml"), name, role)?;
    writeln!(
        out,
        "wrote {d}/{name}.pem and {name}-key.pem; {name} is {role} in {d}/roles.toml",
        d = dir.display()
    )?;
    Ok(())
}

/// Sets `[clients] NAME = ROLE`, keeping whatever else the file holds.
fn record_role(path: &Path, name: &str, role: &str) -> anyhow::Result<()> {
    let mut doc: toml::Table = match std::fs::read_to_string(path) {
        Ok(t) => t
            .parse()
            .with_context(|| format!("{} is not TOML", path.display()))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => toml::Table::new(),
        Err(e) => return Err(e).context(format!("cannot read {}", path.display())),
    };
    let clients = doc
        .entry("clients")
        .or_insert_with(|| toml::Value::Table(toml::Table::new()));
    let Some(clients) = clients.as_table_mut() else {
        bail!("{}: [clients] is not a table", path.display());
    };
    clients.insert(name.to_owned(), toml::Value::String(role.to_owned()));
    let text = format!(
        "# faultline-agent roles (--roles): [clients] identity = viewer | operator | admin;\n\
         # [unix_users] \"uid\" = role; [unix_groups] group = role.\n{}",
        toml::to_string(&doc)?
    );
    write(path, &text, 0o600)
}
