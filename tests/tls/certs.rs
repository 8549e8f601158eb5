//! The certificates of one run, made with rcgen and written as PEM files: the CA that signs
//! the servers' certificate (for `localhost` and `127.0.0.1`, not `127.0.0.2`: connecting
//! to that address is the wrong host name) and the gateway's client certificate, and a
//! second, unrelated CA (the wrong CA).

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose,
};

pub struct Certs {
    pub ca: PathBuf,
    pub other_ca: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
    /// PEM text of the files above, for the test's own clients.
    pub ca_pem: String,
    pub client_cert_pem: String,
    pub client_key_pem: String,
}

pub const CLIENT_NAME: &str = "event-gateway-tls-test";

impl Certs {
    pub fn make(dir: &Path) -> anyhow::Result<Certs> {
        std::fs::create_dir_all(dir)?;
        let ca = authority("event-gateway test CA")?;
        let other = authority("an unrelated CA")?;
        let server_key = KeyPair::generate()?;
        let mut server = CertificateParams::new(vec!["localhost".into(), "127.0.0.1".into()])?;
        server.distinguished_name = name("test server");
        server.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let server = server.signed_by(&server_key, &ca)?;
        let client_key = KeyPair::generate()?;
        let mut client = CertificateParams::new(Vec::<String>::new())?;
        client.distinguished_name = name(CLIENT_NAME);
        client.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let client = client.signed_by(&client_key, &ca)?;
        let write = |file: &str, text: &str, mode: u32| -> anyhow::Result<PathBuf> {
            let path = dir.join(file);
            std::fs::write(&path, text)?;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode))?;
            Ok(path)
        };
        let (client_cert_pem, client_key_pem) = (client.pem(), client_key.serialize_pem());
        Ok(Certs {
            ca: write("ca.pem", &ca.pem(), 0o644)?,
            other_ca: write("other-ca.pem", &other.pem(), 0o644)?,
            server_cert: write("server.pem", &server.pem(), 0o644)?,
            server_key: write("server.key", &server_key.serialize_pem(), 0o600)?,
            client_cert: write("client.pem", &client_cert_pem, 0o644)?,
            client_key: write("client.key", &client_key_pem, 0o600)?,
            ca_pem: ca.pem(),
            client_cert_pem,
            client_key_pem,
        })
    }
}

fn authority(common_name: &str) -> anyhow::Result<CertifiedIssuer<'static, KeyPair>> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name = name(common_name);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    Ok(CertifiedIssuer::self_signed(params, KeyPair::generate()?)?)
}

fn name(common_name: &str) -> DistinguishedName {
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, common_name);
    name
}
