//! `swarm ca`: show the root CA, or rotate it and follow the rotation, as
//! docker/cli's cli/command/swarm/ca.go and swarm/progress/root_rotation.go
//! (docker 28); and the `--external-ca` and PEM-file flags it shares with
//! `swarm init | update` (cli/command/swarm/opts.go).

use std::collections::HashMap;
use std::io::{IsTerminal, Write};
use std::time::Duration;

use bollard::models::{
    Node, Swarm, SwarmSpec, SwarmSpecCaConfigExternalCas, SwarmSpecCaConfigExternalCasProtocolEnum,
    TlsInfo,
};
use clap::Args;

use crate::client::{CliError, Client, Result};
use crate::format::duration::parse_go_duration;
use crate::progress::{counted_bar, msg, status_line, terminal_width, Display, Message};

const POLL_INTERVAL: Duration = Duration::from_millis(200);
const DIGEST_ID: &str = "desired root digest";
const CERTS_ID: &str = "  rotated TLS certificates";
const ROOTS_ID: &str = "  rotated CA certificates";
/// One space, so the two bars line up (ROOTS_ID is one character shorter).
const ROOTS_ACTION: &str = " ";

#[derive(Args, Debug)]
pub struct CaArgs {
    /// Path to the PEM-formatted root CA certificate to use for the new cluster
    #[arg(long = "ca-cert", value_name = "pem-file", value_parser = read_pem_file)]
    ca_cert: Option<PemFile>,
    /// Path to the PEM-formatted root CA key to use for the new cluster
    #[arg(long = "ca-key", value_name = "pem-file", value_parser = read_pem_file)]
    ca_key: Option<PemFile>,
    /// Validity period for node certificates (ns|us|ms|s|m|h)
    #[arg(long = "cert-expiry", value_name = "duration", value_parser = parse_go_duration)]
    cert_expiry: Option<i64>,
    /// Exit immediately instead of waiting for the root rotation to converge
    #[arg(short, long)]
    detach: bool,
    /// Specifications of one or more certificate signing endpoints
    #[arg(long = "external-ca", value_name = "external-ca", value_parser = parse_external_ca)]
    external_ca: Vec<ExternalCa>,
    /// Suppress progress output
    #[arg(short, long)]
    quiet: bool,
    /// Rotate the swarm CA - if no certificate or key are provided, new ones will be generated
    #[arg(long)]
    rotate: bool,
}

/// A `--ca-cert` / `--ca-key` file, read when the flag is parsed (docker's PEMFile).
#[derive(Debug, Clone)]
pub struct PemFile {
    contents: String,
}

/// docker's PEMFile.Set: the file must hold at least one PEM block.
fn read_pem_file(path: &str) -> std::result::Result<PemFile, String> {
    let contents =
        std::fs::read(path).map_err(|e| format!("open {path}: {}", crate::tls::go_errno(&e)))?;
    if crate::tls::pem_blocks(&contents).is_empty() {
        return Err("file contents must be in PEM format".to_string());
    }
    Ok(PemFile {
        contents: String::from_utf8_lossy(&contents).into_owned(),
    })
}

/// One `--external-ca` value.
pub type ExternalCa = SwarmSpecCaConfigExternalCas;

/// docker's parseExternalCA: `protocol=cfssl,url=https://…[,cacert=FILE][,OPTION=VALUE…]`.
pub fn parse_external_ca(spec: &str) -> std::result::Result<ExternalCa, String> {
    let fields = crate::service::opts::csv_record(spec).map_err(|e| e.to_string())?;
    let mut ca = ExternalCa {
        ca_cert: Some(String::new()),
        ..Default::default()
    };
    let mut options = HashMap::new();
    let (mut has_protocol, mut has_url) = (false, false);
    for field in fields {
        let Some((key, value)) = field.split_once('=') else {
            return Err(format!("invalid field '{field}' must be a key=value pair"));
        };
        match key.to_lowercase().as_str() {
            "protocol" => {
                has_protocol = true;
                if value.to_lowercase() != "cfssl" {
                    return Err(format!("unrecognized external CA protocol {value}"));
                }
                ca.protocol = Some(SwarmSpecCaConfigExternalCasProtocolEnum::CFSSL);
            }
            "url" => {
                has_url = true;
                ca.url = Some(value.to_string());
            }
            "cacert" => {
                let contents = std::fs::read(value).map_err(|e| {
                    format!(
                        "unable to read CA cert for external CA: open {value}: {}",
                        crate::tls::go_errno(&e)
                    )
                })?;
                if crate::tls::pem_blocks(&contents).is_empty() {
                    return Err("CA cert for external CA must be in PEM format".to_string());
                }
                ca.ca_cert = Some(String::from_utf8_lossy(&contents).into_owned());
            }
            _ => {
                options.insert(key.to_string(), value.to_string());
            }
        }
    }
    if !has_protocol {
        return Err("the external-ca option needs a protocol= parameter".to_string());
    }
    if !has_url {
        return Err("the external-ca option needs a url= parameter".to_string());
    }
    if !options.is_empty() {
        ca.options = Some(options);
    }
    Ok(ca)
}

/// docker's mergeSwarmSpecCAFlags: `--cert-expiry` and `--external-ca` when
/// given; an external CA without a certificate of its own gets `ca_cert`
/// when there is one (update: the current root; ca: `--ca-cert`).
pub(super) fn merge_ca_flags(
    spec: &mut SwarmSpec,
    cert_expiry: Option<i64>,
    external_ca: &[ExternalCa],
    ca_cert: Option<&str>,
) {
    if let Some(expiry) = cert_expiry {
        spec.ca_config
            .get_or_insert_with(Default::default)
            .node_cert_expiry = Some(expiry);
    }
    if !external_ca.is_empty() {
        let mut cas = external_ca.to_vec();
        if let Some(cert) = ca_cert {
            for ca in &mut cas {
                if ca.ca_cert.as_deref().unwrap_or_default().is_empty() {
                    ca.ca_cert = Some(cert.to_string());
                }
            }
        }
        spec.ca_config
            .get_or_insert_with(Default::default)
            .external_cas = Some(cas);
    }
}

/// The checks docker makes before touching the spec, in its order.
fn validate(args: &CaArgs) -> Result<()> {
    if !args.rotate {
        let given = [
            ("ca-cert", args.ca_cert.is_some()),
            ("ca-key", args.ca_key.is_some()),
            ("cert-expiry", args.cert_expiry.is_some()),
            ("external-ca", !args.external_ca.is_empty()),
        ];
        if let Some((flag, _)) = given.iter().find(|(_, given)| *given) {
            return Err(CliError::Other(format!(
                "`--{flag}` flag requires the `--rotate` flag to update the CA"
            )));
        }
        return Ok(());
    }
    if !args.external_ca.is_empty() && args.ca_cert.is_none() {
        return Err("rotating to an external CA requires the `--ca-cert` flag to specify the external CA's cert - to add an external CA with the current root CA certificate, use the `update` command instead".into());
    }
    if args.ca_cert.is_some() && args.external_ca.is_empty() && args.ca_key.is_none() {
        return Err("the --ca-cert flag requires that a --ca-key flag and/or --external-ca flag be provided as well".into());
    }
    Ok(())
}

/// docker's updateSwarmSpec for a rotation: the signing certificate and key
/// from the files (none when not given), and a forced rotation when
/// neither was given.
fn rotation_spec(mut spec: SwarmSpec, args: &CaArgs) -> SwarmSpec {
    let ca_cert = args
        .ca_cert
        .as_ref()
        .map(|f| f.contents.clone())
        .unwrap_or_default();
    let ca_key = args
        .ca_key
        .as_ref()
        .map(|f| f.contents.clone())
        .unwrap_or_default();
    merge_ca_flags(
        &mut spec,
        args.cert_expiry,
        &args.external_ca,
        Some(&ca_cert),
    );
    let config = spec.ca_config.get_or_insert_with(Default::default);
    let force = ca_cert.is_empty() && ca_key.is_empty();
    config.signing_ca_cert = Some(ca_cert).filter(|c| !c.is_empty());
    config.signing_ca_key = Some(ca_key).filter(|k| !k.is_empty());
    if force {
        config.force_rotate = Some(config.force_rotate.unwrap_or(0).wrapping_add(1));
    }
    spec
}

/// `swarm ca [--rotate …]`, writing to `out` (a terminal when `tty`).
pub(super) async fn ca(
    client: &Client,
    args: CaArgs,
    out: &mut (dyn Write + Send),
    tty: bool,
) -> Result<()> {
    let swarm: Swarm = client.get("/swarm").await?;
    validate(&args)?;
    if !args.rotate {
        return display_trust_root(&swarm, out);
    }
    let spec = rotation_spec(swarm.spec.clone().unwrap_or_default(), &args);
    super::update_swarm(client, &swarm, &spec, super::Rotate::default()).await?;
    if args.detach {
        return Ok(());
    }
    if args.quiet {
        // docker discards the progress and, quiet, prints no certificate either.
        let mut sink = Display::new(std::io::sink(), false, 0);
        return root_rotation_progress(client, &mut |m| sink.show(m)).await;
    }
    {
        let width = if tty { terminal_width() } else { 200 };
        let mut display = Display::new(&mut *out, tty, width);
        root_rotation_progress(client, &mut |m| display.show(m)).await?;
    }
    let swarm: Swarm = client.get("/swarm").await?;
    display_trust_root(&swarm, out)
}

/// docker's displayTrustRoot.
fn display_trust_root(swarm: &Swarm, out: &mut (dyn Write + Send)) -> Result<()> {
    let root = swarm
        .tls_info
        .as_ref()
        .and_then(|t| t.trust_root.as_deref())
        .unwrap_or_default();
    if root.is_empty() {
        return Err("No CA information available".into());
    }
    let _ = writeln!(out, "{}", root.trim());
    let _ = out.flush();
    Ok(())
}

/// docker's RootRotationProgress: two bars, polled every 200 ms, until one
/// more look after every node has the new certificate and trust root. An
/// interrupt leaves it running in the background.
async fn root_rotation_progress(
    client: &Client,
    show: &mut (dyn FnMut(&Message) + Send),
) -> Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut interrupt = signal(SignalKind::interrupt()).ok();
    show(&msg(DIGEST_ID, ""));
    show(&msg(CERTS_ID, ""));
    show(&msg(ROOTS_ID, ROOTS_ACTION));
    let mut done = false;
    loop {
        let swarm: Swarm = client.get("/swarm").await?;
        if done {
            return Ok(());
        }
        let nodes: Vec<Node> = client.get("/nodes").await?;
        let desired = swarm.tls_info.clone().unwrap_or_default();
        let in_progress = swarm.root_rotation_in_progress.unwrap_or(false);
        let (messages, converged) = root_rotation_update(&desired, &nodes, in_progress);
        for message in &messages {
            show(message);
        }
        done = converged;
        let interrupted = match interrupt.as_mut() {
            Some(interrupt) => tokio::select! {
                _ = tokio::time::sleep(POLL_INTERVAL) => false,
                _ = interrupt.recv() => true,
            },
            None => {
                tokio::time::sleep(POLL_INTERVAL).await;
                false
            }
        };
        if interrupted {
            if !done {
                show(&status_line("", "Operation continuing in background."));
                show(&status_line(
                    "",
                    "Use `swarmctl cluster inspect default` to check progress.",
                ));
            }
            return Ok(());
        }
    }
}

/// docker's updateProgress: the messages for one poll, and whether every
/// node has both the new certificate (issuer subject and public key) and
/// the new trust root with no rotation in progress.
pub(crate) fn root_rotation_update(
    desired: &TlsInfo,
    nodes: &[Node],
    rotation_in_progress: bool,
) -> (Vec<Message>, bool) {
    let want_root = desired.trust_root.as_deref().unwrap_or_default();
    let want_subject = desired.cert_issuer_subject.as_deref().unwrap_or_default();
    let want_key = desired
        .cert_issuer_public_key
        .as_deref()
        .unwrap_or_default();
    let mut messages = vec![msg(DIGEST_ID, root_digest(want_root))];
    let (mut certs_right, mut roots_right) = (0i64, 0i64);
    for node in nodes {
        let tls = node
            .description
            .as_ref()
            .and_then(|d| d.tls_info.clone())
            .unwrap_or_default();
        if tls.cert_issuer_public_key.as_deref().unwrap_or_default() == want_key
            && tls.cert_issuer_subject.as_deref().unwrap_or_default() == want_subject
        {
            certs_right += 1;
        }
        if tls.trust_root.as_deref().unwrap_or_default() == want_root {
            roots_right += 1;
        }
    }
    let total = nodes.len() as i64;
    messages.push(counted_bar(CERTS_ID, "", certs_right, total, "nodes"));
    if certs_right == total && !rotation_in_progress {
        messages.push(counted_bar(
            ROOTS_ID,
            ROOTS_ACTION,
            roots_right,
            total,
            "nodes",
        ));
        return (messages, roots_right == total);
    }
    // Certificates still to renew: no trust root counts as rotated yet.
    messages.push(counted_bar(ROOTS_ID, ROOTS_ACTION, 0, total, "nodes"));
    (messages, false)
}

/// go-digest's FromBytes: "sha256:" and the hex digest.
fn root_digest(root: &str) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, root.as_bytes());
    let hex: String = digest.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}")
}

/// `swarm ca` on the process's stdout.
pub(super) async fn ca_to_stdout(client: &Client, args: CaArgs) -> Result<()> {
    let mut stdout = std::io::stdout();
    let tty = stdout.is_terminal();
    ca(client, args, &mut stdout, tty).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{FakeDaemon, Seen};
    use clap::Parser;
    use serde_json::{json, Value};
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: CaArgs,
    }

    fn parse(args: &[&str]) -> std::result::Result<CaArgs, String> {
        Cli::try_parse_from(std::iter::once("ca").chain(args.iter().copied()))
            .map(|c| c.args)
            .map_err(|e| e.to_string())
    }

    const OLD_ROOT: &str = "-----BEGIN CERTIFICATE-----\nT0xE\n-----END CERTIFICATE-----\n";
    const NEW_ROOT: &str = "-----BEGIN CERTIFICATE-----\nTkVX\n-----END CERTIFICATE-----\n";

    fn tls(root: &str, subject: &str, key: &str) -> Value {
        json!({"TrustRoot": root, "CertIssuerSubject": subject, "CertIssuerPublicKey": key})
    }

    fn node(id: &str, tls_info: Value) -> Node {
        serde_json::from_value(json!({"ID": id, "Description": {"TLSInfo": tls_info}})).unwrap()
    }

    fn tls_info(value: Value) -> TlsInfo {
        serde_json::from_value(value).unwrap()
    }

    fn piped(messages: &[Message]) -> String {
        let mut out = Vec::new();
        {
            let mut display = Display::new(&mut out, false, 0);
            for m in messages {
                display.show(m);
            }
        }
        String::from_utf8(out).unwrap()
    }

    fn on_terminal(messages: &[Message], width: usize) -> String {
        let mut out = Vec::new();
        {
            let mut display = Display::new(&mut out, true, width);
            for m in messages {
                display.show(m);
            }
        }
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn progress_counts_certificates_then_roots() {
        let desired = tls_info(tls(NEW_ROOT, "c3Vi", "a2V5"));
        let nodes = [
            node("n1", tls(NEW_ROOT, "c3Vi", "a2V5")),
            node("n2", tls(OLD_ROOT, "b2xk", "b2xk")),
        ];
        let (messages, done) = root_rotation_update(&desired, &nodes, true);
        assert!(!done);
        assert_eq!(
            messages[0].action,
            format!("sha256:{}", {
                let d = ring::digest::digest(&ring::digest::SHA256, NEW_ROOT.as_bytes());
                d.as_ref()
                    .iter()
                    .map(|b| format!("{b:02x}"))
                    .collect::<String>()
            })
        );
        // One of two certificates; roots shown as none yet.
        assert_eq!(messages[1].bar, Some((1, 2)));
        assert_eq!(messages[2].bar, Some((0, 2)));

        // Certificates done but the rotation still in progress: roots still 0.
        let nodes = [
            node("n1", tls(NEW_ROOT, "c3Vi", "a2V5")),
            node("n2", tls(OLD_ROOT, "c3Vi", "a2V5")),
        ];
        let (messages, done) = root_rotation_update(&desired, &nodes, true);
        assert!(!done);
        assert_eq!(messages[1].bar, Some((2, 2)));
        assert_eq!(messages[2].bar, Some((0, 2)));
        // Rotation over: the roots counted.
        let (messages, done) = root_rotation_update(&desired, &nodes, false);
        assert!(!done);
        assert_eq!(messages[2].bar, Some((1, 2)));
        let nodes = [
            node("n1", tls(NEW_ROOT, "c3Vi", "a2V5")),
            node("n2", tls(NEW_ROOT, "c3Vi", "a2V5")),
        ];
        let (_, done) = root_rotation_update(&desired, &nodes, false);
        assert!(done);
    }

    #[test]
    fn progress_lines_as_docker_draws_them() {
        let desired = tls_info(tls(NEW_ROOT, "c3Vi", "a2V5"));
        let nodes = [
            node("n1", tls(NEW_ROOT, "c3Vi", "a2V5")),
            node("n2", tls(OLD_ROOT, "b2xk", "b2xk")),
        ];
        let (update, _) = root_rotation_update(&desired, &nodes, true);
        let digest = update[0].action.clone();
        let mut messages = vec![
            msg(DIGEST_ID, ""),
            msg(CERTS_ID, ""),
            msg(ROOTS_ID, ROOTS_ACTION),
        ];
        messages.extend(update);
        // Piped, jsonmessage drops every line with a bar.
        assert_eq!(
            piped(&messages),
            format!("desired root digest: \n  rotated TLS certificates: \n  rotated CA certificates:  \ndesired root digest: {digest}\n")
        );
        // On a wide terminal: bars of 50 and the counts in nodes.
        let wide = on_terminal(&messages, 200);
        assert!(wide.contains(&format!(
            "\x1b[2K\r  rotated TLS certificates:  [{}>{}] 1/2 nodes\r",
            "=".repeat(25),
            " ".repeat(25)
        )));
        assert!(wide.contains(&format!(
            "\x1b[2K\r  rotated CA certificates:   [>{}] 0/2 nodes\r",
            " ".repeat(50)
        )));
        assert!(wide.contains(&format!("\x1b[2K\rdesired root digest: {digest} \r")));
        // Narrow: counts only.
        let narrow = on_terminal(&messages, 80);
        assert!(narrow.contains("\x1b[2K\r  rotated TLS certificates:  1/2 nodes\r"));
        assert!(narrow.contains("\x1b[2K\r  rotated CA certificates:   0/2 nodes\r"));
        // Every id keeps its line: three lines, redrawn in place.
        assert_eq!(wide.matches('\n').count(), 3);
    }

    #[test]
    fn flags_need_rotate_and_a_certificate_needs_a_key_or_external_ca() {
        let dir = tempfile::tempdir().unwrap();
        let cert = dir.path().join("ca.pem");
        std::fs::write(&cert, NEW_ROOT).unwrap();
        let cert = cert.to_str().unwrap();
        let check = |args: &[&str]| validate(&parse(args).unwrap()).map_err(|e| e.to_string());
        assert_eq!(
            check(&["--ca-cert", cert]).unwrap_err(),
            "`--ca-cert` flag requires the `--rotate` flag to update the CA"
        );
        assert_eq!(
            check(&["--ca-key", cert]).unwrap_err(),
            "`--ca-key` flag requires the `--rotate` flag to update the CA"
        );
        assert_eq!(
            check(&["--cert-expiry", "10h"]).unwrap_err(),
            "`--cert-expiry` flag requires the `--rotate` flag to update the CA"
        );
        assert_eq!(
            check(&["--external-ca", "protocol=cfssl,url=https://ca.example"]).unwrap_err(),
            "`--external-ca` flag requires the `--rotate` flag to update the CA"
        );
        assert_eq!(
            check(&["--rotate", "--external-ca", "protocol=cfssl,url=https://ca.example"]).unwrap_err(),
            "rotating to an external CA requires the `--ca-cert` flag to specify the external CA's cert - to add an external CA with the current root CA certificate, use the `update` command instead"
        );
        assert_eq!(
            check(&["--rotate", "--ca-cert", cert]).unwrap_err(),
            "the --ca-cert flag requires that a --ca-key flag and/or --external-ca flag be provided as well"
        );
        assert!(check(&[]).is_ok());
        assert!(check(&["--rotate"]).is_ok());
        assert!(check(&["--rotate", "--ca-cert", cert, "--ca-key", cert]).is_ok());
        // docker leaves a key without a certificate to the daemon to refuse.
        assert!(check(&["--rotate", "--ca-key", cert]).is_ok());
        assert!(check(&[
            "--rotate",
            "--ca-cert",
            cert,
            "--external-ca",
            "protocol=cfssl,url=https://ca.example"
        ])
        .is_ok());
    }

    #[test]
    fn pem_files_and_external_cas_parse_as_docker() {
        let dir = tempfile::tempdir().unwrap();
        let junk = dir.path().join("junk");
        std::fs::write(&junk, "junk").unwrap();
        let err = parse(&["--ca-cert", junk.to_str().unwrap()]).unwrap_err();
        assert!(err.contains("file contents must be in PEM format"), "{err}");
        let err = parse(&["--ca-key", "/nonexistent/key.pem"]).unwrap_err();
        assert!(
            err.contains("open /nonexistent/key.pem: no such file or directory"),
            "{err}"
        );

        let ca = parse_external_ca("protocol=CFSSL,url=https://ca.example,Extra=1").unwrap();
        assert_eq!(
            serde_json::to_value(&ca).unwrap(),
            json!({"Protocol": "cfssl", "URL": "https://ca.example", "Options": {"Extra": "1"}, "CACert": ""})
        );
        for (spec, error) in [
            ("protocol=cfssl", "the external-ca option needs a url= parameter"),
            ("url=https://x", "the external-ca option needs a protocol= parameter"),
            ("protocol=acme,url=x", "unrecognized external CA protocol acme"),
            ("protocol", "invalid field 'protocol' must be a key=value pair"),
            (
                "protocol=cfssl,url=x,cacert=/nonexistent",
                "unable to read CA cert for external CA: open /nonexistent: no such file or directory",
            ),
        ] {
            assert_eq!(parse_external_ca(spec).unwrap_err(), error, "{spec}");
        }
        let cacert = format!("protocol=cfssl,url=x,cacert={}", junk.display());
        assert_eq!(
            parse_external_ca(&cacert).unwrap_err(),
            "CA cert for external CA must be in PEM format"
        );
    }

    #[test]
    fn cert_expiry_is_a_go_duration() {
        assert_eq!(
            parse(&["--cert-expiry", "2160h"]).unwrap().cert_expiry,
            Some(7_776_000_000_000_000)
        );
        assert_eq!(
            parse(&["--cert-expiry", "1h30m"]).unwrap().cert_expiry,
            Some(5_400_000_000_000)
        );
        let err = parse(&["--cert-expiry", "90d"]).unwrap_err();
        assert!(
            err.contains("time: unknown unit \"d\" in duration \"90d\""),
            "{err}"
        );
    }

    /// GET /swarm answers from `swarms` in turn (the last one repeating),
    /// GET /nodes from `nodes` likewise.
    fn daemon(swarms: Vec<Value>, nodes: Vec<Value>) -> FakeDaemon {
        let swarm_polls = Arc::new(AtomicUsize::new(0));
        let node_polls = Arc::new(AtomicUsize::new(0));
        FakeDaemon::start_with(Arc::new(move |seen: &Seen| {
            let next = |polls: &AtomicUsize, answers: &[Value]| {
                let i = polls.fetch_add(1, Ordering::SeqCst).min(answers.len() - 1);
                (200, answers[i].to_string())
            };
            match seen.path.as_str() {
                "/v1.41/swarm" => next(&swarm_polls, &swarms),
                "/v1.41/nodes" => next(&node_polls, &nodes),
                p if p.starts_with("/v1.41/swarm/update") => (200, String::new()),
                _ => (404, r#"{"message":"page not found"}"#.to_string()),
            }
        }))
    }

    fn swarm(root: &str, in_progress: bool, force_rotate: u64) -> Value {
        json!({
            "ID": "c1",
            "Version": {"Index": 7},
            "Spec": {"Name": "default", "CAConfig": {"NodeCertExpiry": 7_776_000_000_000_000i64, "ForceRotate": force_rotate}},
            "TLSInfo": tls(root, "c3Vi", "a2V5"),
            "RootRotationInProgress": in_progress,
        })
    }

    async fn run(daemon: &FakeDaemon, args: &[&str]) -> (Result<()>, String) {
        let mut out = Vec::new();
        let result = ca(&daemon.client(), parse(args).unwrap(), &mut out, false).await;
        (result, String::from_utf8(out).unwrap())
    }

    #[tokio::test]
    async fn without_rotate_prints_the_trust_root() {
        let daemon = daemon(vec![swarm(NEW_ROOT, false, 0)], vec![]);
        let (result, out) = run(&daemon, &[]).await;
        result.unwrap();
        assert_eq!(out, NEW_ROOT);
        let daemon = daemon_without_root();
        let (result, out) = run(&daemon, &[]).await;
        assert_eq!(
            result.unwrap_err().to_string(),
            "No CA information available"
        );
        assert_eq!(out, "");
    }

    fn daemon_without_root() -> FakeDaemon {
        daemon(vec![json!({"ID": "c1", "Version": {"Index": 1}})], vec![])
    }

    #[tokio::test]
    async fn rotate_forces_a_new_root_and_follows_it_to_the_end() {
        let converged = vec![
            json!({"ID": "n1", "Description": {"TLSInfo": tls(NEW_ROOT, "c3Vi", "a2V5")}}),
            json!({"ID": "n2", "Description": {"TLSInfo": tls(NEW_ROOT, "c3Vi", "a2V5")}}),
        ];
        let halfway = vec![
            json!({"ID": "n1", "Description": {"TLSInfo": tls(NEW_ROOT, "c3Vi", "a2V5")}}),
            json!({"ID": "n2", "Description": {"TLSInfo": tls(OLD_ROOT, "b2xk", "b2xk")}}),
        ];
        let daemon = daemon(
            vec![
                swarm(OLD_ROOT, false, 2),
                swarm(NEW_ROOT, true, 3),
                swarm(NEW_ROOT, false, 3),
            ],
            vec![Value::Array(halfway), Value::Array(converged)],
        );
        let (result, out) = run(&daemon, &["--rotate"]).await;
        result.unwrap();
        let requests: Vec<String> = daemon.requests().into_iter().map(|r| r.0).collect();
        assert_eq!(
            requests,
            [
                "GET /v1.41/swarm",
                "POST /v1.41/swarm/update?version=7&rotateWorkerToken=false&rotateManagerToken=false&rotateManagerUnlockKey=false",
                "GET /v1.41/swarm",
                "GET /v1.41/nodes",
                "GET /v1.41/swarm",
                "GET /v1.41/nodes",
                "GET /v1.41/swarm",
                "GET /v1.41/swarm",
            ]
        );
        let spec: Value = serde_json::from_str(&daemon.requests()[1].1).unwrap();
        assert_eq!(
            spec,
            json!({"Name": "default", "CAConfig": {"NodeCertExpiry": 7_776_000_000_000_000i64, "ForceRotate": 3}})
        );
        let digest = root_digest(NEW_ROOT);
        assert_eq!(
            out,
            format!("desired root digest: \n  rotated TLS certificates: \n  rotated CA certificates:  \ndesired root digest: {digest}\ndesired root digest: {digest}\n{}", NEW_ROOT)
        );
    }

    #[tokio::test]
    async fn rotate_with_files_sends_them_and_quiet_or_detach_print_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let cert = dir.path().join("ca.pem");
        let key = dir.path().join("ca-key.pem");
        std::fs::write(&cert, NEW_ROOT).unwrap();
        std::fs::write(
            &key,
            "-----BEGIN EC PRIVATE KEY-----\nS0VZ\n-----END EC PRIVATE KEY-----\n",
        )
        .unwrap();
        let nodes =
            vec![json!([{"ID": "n1", "Description": {"TLSInfo": tls(NEW_ROOT, "c3Vi", "a2V5")}}])];
        let daemon = daemon(
            vec![swarm(OLD_ROOT, false, 0), swarm(NEW_ROOT, false, 0)],
            nodes,
        );
        let (result, out) = run(
            &daemon,
            &[
                "--rotate",
                "-q",
                "--ca-cert",
                cert.to_str().unwrap(),
                "--ca-key",
                key.to_str().unwrap(),
                "--cert-expiry",
                "48h",
                "--external-ca",
                "protocol=cfssl,url=https://ca.example",
            ],
        )
        .await;
        result.unwrap();
        assert_eq!(out, "");
        let spec: Value = serde_json::from_str(&daemon.requests()[1].1).unwrap();
        assert_eq!(
            spec["CAConfig"],
            json!({
                "NodeCertExpiry": 172_800_000_000_000i64,
                "ExternalCAs": [{"Protocol": "cfssl", "URL": "https://ca.example", "CACert": NEW_ROOT}],
                "SigningCACert": NEW_ROOT,
                "SigningCAKey": "-----BEGIN EC PRIVATE KEY-----\nS0VZ\n-----END EC PRIVATE KEY-----\n",
                "ForceRotate": 0,
            })
        );
        // The progress ran (quietly) until converged.
        assert!(daemon.requests().iter().any(|r| r.0 == "GET /v1.41/nodes"));

        let daemon = self::daemon(vec![swarm(OLD_ROOT, false, 0)], vec![json!([])]);
        let (result, out) = run(&daemon, &["--rotate", "-d"]).await;
        result.unwrap();
        assert_eq!(out, "");
        assert_eq!(daemon.requests().len(), 2);
    }

    #[tokio::test]
    async fn daemon_errors_come_first() {
        let daemon = FakeDaemon::start_with(Arc::new(|_| {
            (
                503,
                r#"{"message":"This node is not a swarm manager. Use \"docker swarm init\" or \"docker swarm join\" to connect this node to swarm and try again."}"#.to_string(),
            )
        }));
        // docker asks the daemon before it checks the flags.
        let (result, _) = run(&daemon, &["--cert-expiry", "1h"]).await;
        assert_eq!(
            result.unwrap_err().to_string(),
            "Error response from daemon: This node is not a swarm manager. Use \"docker swarm init\" or \"docker swarm join\" to connect this node to swarm and try again."
        );
    }
}
