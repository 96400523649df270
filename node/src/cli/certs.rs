//! `shoal certs init` and `shoal certs issue`.

use shoal_transport::CertDir;

use super::CertsCommand;

pub fn run(cmd: CertsCommand) -> anyhow::Result<()> {
    match cmd {
        CertsCommand::Init { dir, label } => {
            let certs = CertDir::new(&dir);
            certs.init_ca(&label)?;
            println!(
                "cluster CA created: {} (certificate) and {} (private key, keep it safe)",
                certs.ca_cert_path().display(),
                certs.ca_key_path().display()
            );
        }
        CertsCommand::Issue { dir, name } => {
            let certs = CertDir::new(&dir);
            certs.issue(&name)?;
            println!(
                "certificate for {name} issued: {} and {}",
                certs.node_cert_path(&name).display(),
                certs.node_key_path(&name).display()
            );
        }
    }
    Ok(())
}
