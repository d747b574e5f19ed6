//! TLS: HTTPS and WSS on the HTTP listener and MQTT over TLS, with certificates made by the test
//! (rcgen), checked by curl `--cacert`, `openssl s_client`, `mosquitto_pub --cafile` and
//! reqwest; a new certificate is put in force by SIGHUP without dropping open connections.

use std::path::Path;
use std::process::Command;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use serde_json::json;

use crate::common::{Fixture, Process, eventually, tablecast_command};

/// Writes `ca.pem` and a `cert.pem` / `key.pem` for localhost and 127.0.0.1 signed by it into
/// `dir`, under `name`.
fn certificates(dir: &Path, name: &str) {
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.distinguished_name
        .push(DnType::CommonName, format!("{name} test CA"));
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca_key = KeyPair::generate().unwrap();
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca, ca_key);
    let mut leaf = CertificateParams::new(vec!["localhost".into(), "127.0.0.1".into()]).unwrap();
    leaf.distinguished_name
        .push(DnType::CommonName, "localhost");
    leaf.use_authority_key_identifier_extension = true;
    let leaf_key = KeyPair::generate().unwrap();
    let leaf_cert = leaf.signed_by(&leaf_key, &issuer).unwrap();
    std::fs::write(dir.join(format!("{name}-ca.pem")), ca_cert.pem()).unwrap();
    std::fs::write(dir.join("cert.pem"), leaf_cert.pem() + &ca_cert.pem()).unwrap();
    std::fs::write(dir.join("key.pem"), leaf_key.serialize_pem()).unwrap();
}

fn curl(base: &str, ca: &Path) -> std::process::Output {
    Command::new("curl")
        .args(["-sS", "--max-time", "10", "--cacert"])
        .arg(ca)
        .arg(format!("{base}/_health"))
        .output()
        .expect("curl runs")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_wss_and_mqtts_with_a_certificate_that_reloads_on_sighup() {
    let fixture = Fixture::new();
    let dir = fixture
        .data
        .path()
        .parent()
        .unwrap()
        .join(format!("tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    certificates(&dir, "first");
    let mut command = tablecast_command(
        &[
            "serve",
            "--http",
            "127.0.0.1:0",
            "--mqtt",
            "off",
            "--mqtts",
            "127.0.0.1:0",
        ],
        fixture.schemas.path(),
        fixture.data.path(),
    );
    command
        .arg("--tls-cert")
        .arg(dir.join("cert.pem"))
        .arg("--tls-key")
        .arg(dir.join("key.pem"));
    let server = Process::spawn_with(command);
    assert!(server.base.starts_with("https://"), "{}", server.base);
    let base = server.base.replace("127.0.0.1", "localhost");
    let first_ca = dir.join("first-ca.pem");
    // curl, trusting the test CA only.
    let answered = curl(&base, &first_ca);
    assert!(
        answered.status.success(),
        "{}",
        String::from_utf8_lossy(&answered.stderr)
    );
    assert!(String::from_utf8_lossy(&answered.stdout).contains("ok"));
    // openssl s_client sees the chain and ALPN http/1.1.
    let s_client = Command::new("openssl")
        .args([
            "s_client",
            "-connect",
            &server.addr.to_string(),
            "-servername",
            "localhost",
            "-alpn",
            "http/1.1",
            "-CAfile",
        ])
        .arg(&first_ca)
        .stdin(std::process::Stdio::null())
        .output()
        .expect("openssl runs");
    let said = String::from_utf8_lossy(&s_client.stdout).into_owned();
    assert!(said.contains("Verify return code: 0 (ok)"), "{said}");
    assert!(said.contains("ALPN protocol: http/1.1"), "{said}");
    // reqwest over HTTPS, kept alive across the reload below, and WSS.
    let ca = reqwest::Certificate::from_pem(&std::fs::read(&first_ca).unwrap()).unwrap();
    let client = reqwest::Client::builder()
        .add_root_certificate(ca)
        .build()
        .unwrap();
    let put = client
        .put(format!("{base}/Item/a"))
        .json(&json!({"name": "over TLS"}))
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), 204);
    // WSS: a WebSocket subscription over a TLS connection that trusts the test CA.
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls::pki_types::pem::PemObject::pem_file_iter(&first_ca).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let provider = std::sync::Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let stream = tokio_rustls::TlsConnector::from(std::sync::Arc::new(tls))
        .connect(name, tcp)
        .await
        .unwrap();
    let wss = format!("{}/Item/a", base.replacen("https", "wss", 1));
    let (mut ws, _) = tokio_tungstenite::client_async(wss, stream)
        .await
        .expect("WSS upgrade");
    use futures::StreamExt;
    let frame = tokio::time::timeout(std::time::Duration::from_secs(20), ws.next()).await;
    let text = frame
        .expect("a frame in time")
        .expect("open")
        .expect("a frame")
        .into_text()
        .unwrap();
    let current: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(current["value"]["name"], "over TLS");
    // MQTT over TLS with mosquitto_pub --cafile: a retained publish is a write.
    let mqtts = server
        .mqtts
        .expect("an MQTT over TLS listener")
        .port()
        .to_string();
    let published = Command::new("mosquitto_pub")
        .args([
            "-h",
            "localhost",
            "-p",
            &mqtts,
            "-q",
            "1",
            "-r",
            "-t",
            "Item/m",
            "-m",
            r#"{"name":"by mqtts"}"#,
            "--cafile",
        ])
        .arg(&first_ca)
        .output()
        .expect("mosquitto_pub runs");
    assert!(
        published.status.success(),
        "{}",
        String::from_utf8_lossy(&published.stderr)
    );
    let stored: serde_json::Value = client
        .get(format!("{base}/Item/m"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(stored["name"], "by mqtts");
    // A plain-text client on the TLS port is not served.
    let plain = reqwest::get(format!("http://{}/_health", server.addr)).await;
    assert!(plain.is_err() || !plain.unwrap().status().is_success());
    // A new certificate from another CA, put in force by SIGHUP.
    certificates(&dir, "second");
    let second_ca = dir.join("second-ca.pem");
    let pid = server.child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-HUP", &pid])
            .status()
            .unwrap()
            .success()
    );
    eventually("new handshakes present the new certificate", async || {
        curl(&base, &second_ca).status.success()
    })
    .await;
    assert!(
        !curl(&base, &first_ca).status.success(),
        "the old CA no longer verifies the server"
    );
    // The connection opened before the reload still serves.
    let kept = client.get(format!("{base}/Item/a")).send().await.unwrap();
    assert_eq!(kept.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_that_does_not_match_its_key_stops_start_up() {
    let fixture = Fixture::new();
    let dir = fixture.data.path().join("certs");
    std::fs::create_dir_all(&dir).unwrap();
    certificates(&dir, "one");
    let key = std::fs::read(dir.join("key.pem")).unwrap();
    certificates(&dir, "two");
    std::fs::write(dir.join("key.pem"), key).unwrap();
    let mut config = fixture.config();
    config.tls_cert = Some(dir.join("cert.pem"));
    config.tls_key = Some(dir.join("key.pem"));
    let error = tablecast::App::open(config)
        .err()
        .expect("refused")
        .to_string();
    assert!(
        error.contains("cert.pem") && error.contains("key.pem"),
        "{error}"
    );
}
