//! The Proxmox VE backend against the in-test PVE node (tests/support/pve.rs):
//! HTTPS with a certificate made for the test, the documented API and its
//! authentication rules, and real QEMU running the test guest behind it.
//!
//! No real Proxmox VE runs here; what only a real cluster can show is listed
//! in docs/VM.md ("Proxmox VE").

#[path = "support/pve.rs"]
mod pve;
mod support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use pve::{Options, PveServer};
use smoke::secrets::{SecretSource, SecretStore};
use smoke::vm::proxmox::api::VmRef;
use smoke::vm::proxmox::client::{ClientOptions, Credentials, Hidden, PveClient};
use smoke::vm::proxmox::settings::{AuthSource, ProxmoxSettings};
use smoke::vm::proxmox::tasks::{self, Upid};
use smoke::vm::proxmox::tls::{Trust, parse_fingerprint};
use smoke::vm::proxmox::{ProxmoxVm, PveError};
use smoke::vm::{StopMode, StopPath, VmBackend, VmStatus};

fn pin(server: &PveServer) -> Trust {
    Trust::Fingerprint(parse_fingerprint(&server.certs.fingerprint).unwrap())
}

fn token(server: &PveServer) -> Credentials {
    Credentials::token(&server.token(), None).unwrap()
}

fn root_password() -> Credentials {
    Credentials::Password { user: "root@pam".into(), password: Hidden::new("test-root-password") }
}

async fn client(server: &PveServer, creds: Credentials) -> PveClient {
    PveClient::connect(&ClientOptions::new(server.url(), pin(server), creds)).await.unwrap()
}

fn guest() {
    let status = std::process::Command::new("bash").arg(support::repo().join("scripts/build-test-guest.sh")).status();
    assert!(matches!(status, Ok(s) if s.success()), "scripts/build-test-guest.sh failed: run scripts/setup-debian.sh");
}

/// A backend for `vmid` (or a template) on the server, with a token from a file.
fn backend(server: &PveServer, dir: &std::path::Path, vmid: Option<u32>, template: Option<u32>) -> ProxmoxVm {
    let token_file = dir.join("token");
    std::fs::write(&token_file, format!("{}\n", server.token())).unwrap();
    let settings = ProxmoxSettings {
        url: server.url(),
        host: "127.0.0.1".into(),
        port: server.port,
        node: server.node(),
        vmid,
        template,
        auth: AuthSource::Token { secret: SecretSource::File(token_file), token_id: None },
        trust: Trust::CaFile(server.certs.ca_pem.clone()),
        shutdown_timeout: Duration::from_secs(2),
    };
    ProxmoxVm::new("pve-target", settings, SecretStore::new(BTreeMap::new()))
}

/// A node with VM 100 (the test guest) and a backend for it.
async fn vm_100() -> (PveServer, tempfile::TempDir, ProxmoxVm) {
    guest();
    let server = PveServer::start(Options::default()).await;
    server.add_vm(100, false, &[]);
    let dir = tempfile::tempdir().unwrap();
    let b = backend(&server, dir.path(), Some(100), None);
    (server, dir, b)
}

/// Teardown without errors, and the VM no longer runs.
async fn teardown_clean(mut b: ProxmoxVm, server: &PveServer) {
    let report = b.teardown().await;
    assert!(report.errors.is_empty(), "{report:?}");
    assert!(!server.is_running(100));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_auth_and_the_errors_pve_gives_without_it() {
    let server = PveServer::start(Options::default()).await;
    server.add_vm(100, false, &[]);
    let c = client(&server, token(&server)).await;
    let vm = VmRef::new(server.node(), 100);
    let s = vm.status(&c).await.unwrap();
    assert_eq!(s.status, "stopped");
    let config = vm.config(&c).await.unwrap();
    assert_eq!(config.get("vga").map(String::as_str), Some("std"));
    assert!(config.contains_key("digest"), "{config:?}");
    // tokens need no CSRF token for changes
    vm.set_config(&c, &[("description", "changed by a token".into())]).await.unwrap();
    assert_eq!(server.vm_config(100).unwrap()["description"], "changed by a token");
    assert!(server.counters().requests.iter().all(|(_, _, kind)| kind == "token"));

    // a wrong token: 401 in the reason phrase, after PVE's 3 s
    let bad = Credentials::token("root@pam!smoke=00000000-0000-0000-0000-000000000000", None).unwrap();
    let c_bad = client(&server, bad).await;
    let begun = Instant::now();
    let e = vm.status(&c_bad).await.unwrap_err();
    assert!(begun.elapsed() >= Duration::from_millis(2900), "{:?}", begun.elapsed());
    assert_eq!(e.status(), Some(401), "{e}");
    assert_eq!(e.message(), Some("Authentication failed!"), "{e}");
    assert!(e.to_string().contains("USER@REALM!TOKENID=SECRET"), "hint: {e}");
    assert!(!e.to_string().contains("00000000-0000"), "the secret leaked: {e}");
    assert!(!format!("{c_bad:?}").contains("00000000-0000"), "{c_bad:?}");

    // no credentials at all
    let raw = reqwest::Client::builder()
        .use_preconfigured_tls(smoke::vm::proxmox::tls::client_config(&pin(&server)).unwrap())
        .build()
        .unwrap();
    let r = raw
        .get(format!("{}/api2/json/nodes/{}/qemu/100/status/current", server.url(), server.node()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
    let reason =
        r.extensions().get::<hyper::ext::ReasonPhrase>().map(|p| String::from_utf8_lossy(p.as_bytes()).into_owned());
    assert_eq!(reason.as_deref(), Some("No ticket"));
    // errors with a JSON body keep PVE's message
    let e = VmRef::new(server.node(), 999).status(&c).await.unwrap_err();
    assert_eq!(e.status(), Some(500));
    assert!(e.to_string().contains("Configuration file 'nodes/pve-test/qemu-server/999.conf' does not exist"), "{e}");
    let e = c.post(&vm.path("/snapshot"), &[("snapname", "ok1".into()), ("bogus", "1".into())]).await.unwrap_err();
    assert_eq!(e.status(), Some(400));
    assert!(
        e.to_string().contains("Parameter verification failed.")
            && e.to_string().contains("bogus: property is not defined"),
        "{e}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ticket_auth_needs_csrf_on_changes_and_renews_before_expiry() {
    // short-lived tickets, but not so short that a loaded machine lets one
    // expire between two requests of the first part
    let opts = Options { ticket_lifetime: Duration::from_secs(8), ..Options::default() };
    let server = PveServer::start(opts).await;
    server.add_vm(100, false, &[]);
    let vm = VmRef::new(server.node(), 100);
    let mut o = ClientOptions::new(server.url(), pin(&server), root_password());
    o.ticket_renewal = Duration::from_secs(1);
    let c = PveClient::connect(&o).await.unwrap();
    assert_eq!(server.counters().logins, 1);
    // changes carry the CSRF token
    vm.set_config(&c, &[("description", "by ticket".into())]).await.unwrap();
    assert_eq!(server.vm_config(100).unwrap()["description"], "by ticket");
    assert!(format!("{c:?}").find("PVE:").is_none(), "{c:?}");

    // the same change without CSRFPreventionToken is refused
    let headers = c.auth_headers().await.unwrap();
    assert_eq!(headers[0].0, "Cookie");
    let raw = reqwest::Client::builder()
        .use_preconfigured_tls(smoke::vm::proxmox::tls::client_config(&pin(&server)).unwrap())
        .build()
        .unwrap();
    let r = raw
        .put(format!("{}/api2/json{}", server.url(), vm.path("/config")))
        .header("Cookie", &headers[0].1)
        .header("Content-Type", "application/x-www-form-urlencoded")
        .body("description=no-csrf")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
    let reason =
        r.extensions().get::<hyper::ext::ReasonPhrase>().map(|p| String::from_utf8_lossy(p.as_bytes()).into_owned());
    assert_eq!(reason.as_deref(), Some("Permission denied - invalid csrf token"));
    assert_eq!(server.counters().csrf_refusals, 1);
    assert_eq!(server.vm_config(100).unwrap()["description"], "by ticket");
    // GET needs no CSRF token
    let r = raw
        .get(format!("{}/api2/json{}", server.url(), vm.path("/config")))
        .header("Cookie", &headers[0].1)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);

    // tickets live 8 s here; the client renews after 1 s and keeps working
    let begun = Instant::now();
    while begun.elapsed() < Duration::from_secs(10) {
        vm.status(&c).await.unwrap();
        tokio::time::sleep(Duration::from_millis(700)).await;
    }
    let n = server.counters();
    assert!(n.renewals >= 4, "renewals: {}", n.renewals);
    assert_eq!(n.logins, 1, "renewal used the ticket, not the password again");

    // a wrong password
    let wrong = Credentials::Password { user: "root@pam".into(), password: Hidden::new("nope") };
    let e = PveClient::connect(&ClientOptions::new(server.url(), pin(&server), wrong)).await.unwrap_err();
    assert_eq!(e.status(), Some(401));
    assert!(
        e.to_string().contains("authentication failure") && e.to_string().contains("wrong user or password"),
        "{e}"
    );
    assert!(!e.to_string().contains("nope"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_pins_and_ca_are_checked_and_nothing_else_is_accepted() {
    let server = PveServer::start(Options::default()).await;
    let connect = |trust: Trust| {
        let url = server.url();
        let creds = token(&server);
        async move {
            let c = PveClient::connect(&ClientOptions::new(url, trust, creds)).await?;
            smoke::vm::proxmox::api::next_id(&c).await
        }
    };
    assert_eq!(connect(pin(&server)).await.unwrap(), 100);
    assert_eq!(connect(Trust::CaFile(server.certs.ca_pem.clone())).await.unwrap(), 100);
    let wrong = Trust::Fingerprint([0x11; 32]);
    let e = connect(wrong).await.unwrap_err();
    assert!(matches!(e, PveError::Transport { .. }), "{e}");
    let text = e.to_string();
    assert!(text.contains("fingerprint mismatch") && text.contains(&server.certs.fingerprint), "{text}");
    let e = connect(Trust::System).await.unwrap_err().to_string();
    assert!(e.contains("UnknownIssuer") && e.contains("pve-root-ca.pem"), "{e}");
    // a CA that did not sign the node's certificate
    let other = pve::Certs::generate(&server.certs.dir.join("other"));
    let e = connect(Trust::CaFile(other.ca_pem)).await.unwrap_err().to_string();
    assert!(e.contains("certificate"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tasks_are_followed_and_a_failing_task_brings_its_log() {
    let server = PveServer::start(Options::default()).await;
    server.add_vm(100, false, &[]);
    let c = client(&server, token(&server)).await;
    let vm = VmRef::new(server.node(), 100);
    let upid = vm.set_config_async(&c, &[("description", "async".into())]).await.unwrap().unwrap();
    assert_eq!((upid.node.as_str(), upid.kind.as_str(), upid.id.as_str()), ("pve-test", "qmconfig", "100"));
    assert_eq!(upid.user, "root@pam!smoke");
    assert_eq!(tasks::wait(&c, &upid, Duration::from_secs(10)).await.unwrap(), tasks::TaskOutcome::Ok);
    let log = tasks::log_tail(&c, &upid, 20).await.unwrap();
    assert_eq!(log.last().map(String::as_str), Some("TASK OK"));

    let upid = vm.snapshot_rollback(&c, "nope", false).await.unwrap();
    let e = tasks::wait(&c, &upid, Duration::from_secs(10)).await.unwrap_err();
    let text = e.to_string();
    assert!(
        matches!(&e, PveError::TaskFailed { exitstatus, .. } if exitstatus == "snapshot 'nope' does not exist"),
        "{text}"
    );
    assert!(text.contains("qmrollback") && text.contains("TASK ERROR: snapshot 'nope' does not exist"), "{text}");
    // an unknown task
    let fake = Upid::parse("UPID:pve-test:00000001:00000002:00000003:qmstart:100:root@pam:").unwrap();
    let e = tasks::status(&c, &fake).await.unwrap_err();
    assert_eq!(e.status(), Some(400), "{e}");
    assert!(e.to_string().contains("upid: no such task"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn preflight_warns_about_vga_tablet_and_machine() {
    let server = PveServer::start(Options::default()).await;
    server.add_vm(100, false, &[]);
    server.add_vm(101, false, &[("vga", "qxl"), ("tablet", "0"), ("machine", "pc")]);
    let dir = tempfile::tempdir().unwrap();
    let warnings = backend(&server, dir.path(), Some(100), None).prepare().await.unwrap();
    assert!(warnings.is_empty(), "{warnings:?}");
    let warnings = backend(&server, dir.path(), Some(101), None).prepare().await.unwrap();
    assert_eq!(warnings.len(), 3, "{warnings:?}");
    assert!(warnings[0].contains("vga: qxl"), "{warnings:?}");
    assert!(warnings[1].contains("tablet: 0") && warnings[1].contains("drift"), "{warnings:?}");
    assert!(warnings[2].contains("machine type pc"), "{warnings:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn linked_clones_come_only_from_templates_and_are_deleted_at_teardown() {
    let server = PveServer::start(Options::default()).await;
    server.add_vm(100, false, &[]);
    server.add_vm(9000, true, &[]);
    let c = client(&server, token(&server)).await;
    // the API refuses a linked clone of a plain VM
    let e = VmRef::new(server.node(), 100).clone_to(&c, 150, "x", false).await.unwrap_err();
    assert_eq!(e.status(), Some(500));
    assert!(
        e.to_string().contains("Linked clone feature is not supported for 'local:100/vm-100-disk-0.qcow2' (scsi0)"),
        "{e}"
    );
    // the backend says why before asking
    let dir = tempfile::tempdir().unwrap();
    let e = backend(&server, dir.path(), None, Some(100)).prepare().await.unwrap_err().to_string();
    assert!(e.contains("VM 100 is not a template") && e.contains("qm template 100"), "{e}");
    // using a template directly is refused too
    let e = backend(&server, dir.path(), Some(9000), None).prepare().await.unwrap_err().to_string();
    assert!(e.contains("template: 9000"), "{e}");

    let mut b = backend(&server, dir.path(), None, Some(9000));
    assert!(b.prepare().await.unwrap().is_empty());
    let clone = b.vm().unwrap().vmid;
    assert_eq!(clone, 101, "the first free VMID");
    let conf = server.vm_config(clone).unwrap();
    assert!(conf["scsi0"].starts_with("local:9000/base-9000-disk-0.qcow2/101/vm-101-disk-0.qcow2"), "{conf:?}");
    assert!(!conf.contains_key("template"), "{conf:?}");
    assert!(conf["name"].starts_with("smoke-pve-target-"), "{conf:?}");
    assert!(b.lock_key().starts_with("proxmox:127.0.0.1:pve-test:clone-of-9000:"), "{}", b.lock_key());
    let report = b.teardown().await;
    assert!(report.errors.is_empty(), "{report:?}");
    assert!(report.steps.iter().any(|s| s.contains("clone 101 on pve-test deleted")), "{report:?}");
    assert!(!server.has_vm(clone));
    assert!(server.has_vm(9000));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn power_operations_on_real_qemu_and_graceful_stop_falls_back_to_stop() {
    let (server, _dir, mut b) = vm_100().await;
    b.prepare().await.unwrap();
    assert_eq!(b.status().await.unwrap(), VmStatus::Stopped);
    b.start().await.unwrap();
    assert!(server.is_running(100));
    assert_eq!(b.status().await.unwrap(), VmStatus::Running);
    // starting again is a no-op, the API itself refuses it as a task error
    b.start().await.unwrap();
    let c = client(&server, token(&server)).await;
    let upid = VmRef::new(server.node(), 100).start(&c).await.unwrap();
    let e = tasks::wait(&c, &upid, Duration::from_secs(10)).await.unwrap_err().to_string();
    assert!(e.contains("VM 100 already running"), "{e}");
    b.reset().await.unwrap();
    // the busybox guest ignores ACPI power-down: shutdown times out, stop ends it
    let begun = Instant::now();
    let out = b.stop(StopMode::Graceful { timeout: Duration::from_secs(2) }).await.unwrap();
    assert_eq!(out.path, StopPath::Terminated, "{out:?}");
    assert!(begun.elapsed() >= Duration::from_secs(2), "{:?}", begun.elapsed());
    assert!(!server.is_running(100));
    assert_eq!(b.stop(StopMode::Hard).await.unwrap().path, StopPath::AlreadyStopped);
    // reset of a stopped VM is refused synchronously
    let e = VmRef::new(server.node(), 100).reset(&c).await.unwrap_err();
    assert!(e.to_string().contains("VM 100 not running"), "{e}");
    let report = b.teardown().await;
    assert!(report.errors.is_empty(), "{report:?}");
}

/// Wait until the guest's console shows its banner (a still screen).
async fn settled_screen(server: &PveServer, vmid: u32) -> Vec<u8> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if server.serial(vmid).contains("SMOKE-GUEST-READY") {
            let a = server.screendump(vmid).await;
            tokio::time::sleep(Duration::from_millis(500)).await;
            let b = server.screendump(vmid).await;
            if a == b {
                return b;
            }
        }
        assert!(Instant::now() < deadline, "guest did not settle; serial: {}", server.serial(vmid));
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_rollback_restores_a_changed_screen() {
    let (server, _dir, mut b) = vm_100().await;
    b.prepare().await.unwrap();
    b.start().await.unwrap();
    let before = settled_screen(&server, 100).await;
    b.snapshot_create("clean").await.unwrap();
    let list = b.snapshot_list().await.unwrap();
    assert_eq!(list.iter().map(|s| s.name.as_str()).collect::<Vec<_>>(), vec!["clean"]);
    assert!(list[0].date.is_some());
    // change the screen
    server.send_text(100, "echo CHANGED\n").await;
    let deadline = Instant::now() + Duration::from_secs(20);
    while server.screendump(100).await == before {
        assert!(Instant::now() < deadline, "typing did not change the screen");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    b.snapshot_rollback("clean").await.unwrap();
    assert_eq!(b.status().await.unwrap(), VmStatus::Running);
    let after = server.screendump(100).await;
    assert!(after == before, "the screen after rollback differs from the snapshot's");
    // names are unique; deleting works
    let e = b.snapshot_create("clean").await.unwrap_err().to_string();
    assert!(e.contains("snapshot name 'clean' already used"), "{e}");
    b.snapshot_delete("clean").await.unwrap();
    assert!(b.snapshot_list().await.unwrap().is_empty());
    teardown_clean(b, &server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_screen_through_vncproxy_and_the_websocket_with_a_health_probe() {
    let (server, _dir, mut b) = vm_100().await;
    let begun = Instant::now();
    let access = b.start_for_run().await.unwrap();
    eprintln!("prepare + start + health probe + proxy: {:?}", begun.elapsed());
    assert!(server.counters().websocket_upgrades >= 1, "the probe went through the websocket");
    let endpoint_text = access.endpoint.to_string();
    assert!(
        endpoint_text.starts_with("wss://127.0.0.1:") && endpoint_text.ends_with("/vncwebsocket?..."),
        "{endpoint_text}"
    );
    let debug = format!("{access:?}");
    assert!(!debug.contains("PVEAPIToken=root") && !debug.contains("PVEVNC"), "{debug}");
    let opts = access.connect_options(Duration::from_secs(10));
    let vnc = smoke::rfb::VncClient::connect(&access.endpoint, &opts).await.unwrap();
    let frame = vnc.capture(Duration::from_secs(10)).await.unwrap();
    assert!(frame.width() >= 640, "{}x{}", frame.width(), frame.height());
    vnc.close().await;
    let n = server.counters();
    assert!(n.ws_bytes_out > 1000 && n.ws_bytes_in > 0, "{n:?}");
    // one connection per vncproxy: the same access again is refused
    let again = smoke::rfb::VncClient::connect(&access.endpoint, &opts).await;
    assert!(again.is_err(), "a used proxy accepted a second connection");
    // a fresh one works, with ticket login too (the cookie instead of the token header)
    b.probe(Duration::from_secs(10)).await.unwrap();
    teardown_clean(b, &server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_vm_fails_the_probe_and_is_brought_back_once() {
    let (server, _dir, mut b) = vm_100().await;
    b.prepare().await.unwrap();
    let e = b.probe(Duration::from_secs(5)).await.unwrap_err().to_string();
    assert!(e.contains("not running"), "{e}");
    b.ensure_healthy(Duration::from_secs(20)).await.unwrap();
    assert!(server.is_running(100));
    b.teardown().await;
    assert!(!server.is_running(100), "smoke started it, so teardown stops it");
}

/// A project whose inventory has the target `pve-target` for VM 100 on `server`.
fn pve_project(server: &PveServer) -> tempfile::TempDir {
    let project = tempfile::tempdir().unwrap();
    std::fs::write(project.path().join("pve-token"), format!("{}\n", server.token())).unwrap();
    let inventory = format!(
        "default: pve-target\ntargets:\n  pve-target:\n    backend: proxmox\n    family: linux\n    proxmox:\n      url: {}\n      node: {}\n      vmid: 100\n      token_file: {}\n      fingerprint: \"{}\"\n      shutdown_timeout: 2s\n",
        server.url(),
        server.node(),
        project.path().join("pve-token").display(),
        server.certs.fingerprint
    );
    std::fs::write(project.path().join("inventory.yaml"), inventory).unwrap();
    project
}

/// `smoke run --os pve-target` of `scenario` in `project`: (output, run folder).
async fn smoke_run(project: &std::path::Path, scenario: &str) -> (std::process::Output, std::path::PathBuf) {
    let (out, run) = smoke_run_locked(project, scenario, &[], None).await;
    (out, run.unwrap_or_default())
}

/// The same with more arguments and `SMOKE_LOCK_DIR`; the run folder when
/// one was made.
async fn smoke_run_locked(
    project: &std::path::Path,
    scenario: &str,
    extra: &[&str],
    lock_dir: Option<&std::path::Path>,
) -> (std::process::Output, Option<std::path::PathBuf>) {
    std::fs::write(project.join("scenario.yaml"), scenario).unwrap();
    let results = tempfile::tempdir_in(project).unwrap().keep();
    let mut cmd = support::smoke();
    cmd.current_dir(project)
        .args(["run", "scenario.yaml", "--os", "pve-target", "--results"])
        .arg(&results)
        .args(extra);
    if let Some(dir) = lock_dir {
        cmd.env("SMOKE_LOCK_DIR", dir);
    }
    let t = Instant::now();
    let out = tokio::task::spawn_blocking(move || {
        let _one = support::lock();
        cmd.output().expect("run smoke")
    })
    .await
    .unwrap();
    eprintln!("smoke run --os pve-target: {:?}", t.elapsed());
    let run = support::run_dir(&results);
    if lock_dir.is_none() {
        assert!(run.is_some(), "no run folder: {}", support::text(&out));
    }
    (out, run)
}

/// No file of the run holds the API token's secret.
fn assert_no_token(server: &PveServer, run: &std::path::Path) {
    let secret = server.token();
    let secret = secret.split_once('=').unwrap().1;
    for entry in std::fs::read_dir(run).unwrap().flatten() {
        if let Ok(text) = std::fs::read_to_string(entry.path()) {
            assert!(!text.contains(secret), "{} holds the token secret", entry.path().display());
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smoke_run_on_a_proxmox_target_through_the_websocket() {
    guest();
    let server = PveServer::start(Options::default()).await;
    server.add_vm(100, false, &[]);
    let project = pve_project(&server);
    let (out, run) = smoke_run(
        project.path(),
        "name: pve\nsteps:\n  - label: the guest booted\n    wait_for: {ocr: SMOKE-GUEST-READY}\n    timeout: 60s\n  - label: type on the console\n    type: \"echo PVE-STATE-ONE\\n\"\n    verify: {ocr: PVE-STATE-ONE}\n    timeout: 20s\n",
    )
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", support::text(&out));
    assert!(server.counters().websocket_upgrades >= 2, "probe and run connections: {:?}", server.counters());
    assert!(!server.is_running(100), "the VM smoke started is stopped at the end");
    assert_no_token(&server, &run);
}

/// A rollback on Proxmox VE stops QEMU and starts a new one on the saved
/// state: the websocket ends, and its ticket admits no second connection.
/// The run's VNC client must reconnect through a new `vncproxy`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rewind_on_proxmox_reconnects_the_screen_through_a_new_proxy() {
    guest();
    let server = PveServer::start(Options::default()).await;
    server.add_vm(100, false, &[]);
    let project = pve_project(&server);
    // `t` answers EARLY-42 until 8 s after the checkpoint's moment (the RTC is
    // host time, which a rollback does not turn back), LATE-42 after it: the
    // check fails the first time, the VM is rolled back, and passes the second
    let scenario = r#"name: pve-rewind
rewind_on_failure: true
steps:
  - label: the guest booted
    wait_for: {ocr: SMOKE-GUEST-READY}
    timeout: 60s
  - type: "T0=$(cat /sys/class/rtc/rtc0/since_epoch); t() { if [ $(cat /sys/class/rtc/rtc0/since_epoch) -ge $((T0+8)) ]; then echo LATE-$((6*7)); else echo EARLY-$((6*7)); fi; }; clear\n"
  - checkpoint: ready
  - type: "t\n"
  - label: LATE only after the rewind
    verify: {ocr: LATE-42}
    timeout: 8s
"#;
    let (out, run) = smoke_run(project.path(), scenario).await;
    let text = support::text(&out);
    assert_eq!(out.status.code(), Some(0), "{text}");
    let s = support::summary(&run);
    let rewinds = s["rewinds"].as_array().expect("a rewind is in the summary");
    assert_eq!(rewinds.len(), 1, "{s}");
    assert_eq!(rewinds[0]["checkpoint"], "ready");
    let warnings = s["warnings"].to_string();
    assert!(warnings.contains("VNC connection was re-established"), "{warnings}");
    let n = server.counters();
    let proxies = n.requests.iter().filter(|(m, p, _)| m == "POST" && p.ends_with("/vncproxy")).count();
    assert!(proxies >= 3 && n.websocket_upgrades >= 3, "probe, run and the reconnect each need a proxy: {n:?}");
    assert!(!server.is_running(100), "the VM smoke started is stopped at the end");
    assert_no_token(&server, &run);
}

/// A VM whose config passes a PCI device through (`hostpci0`): the device is
/// locked (node and address) before the VM starts, and a run finding it
/// busy waits, then fails naming the holder without starting the VM.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_passed_through_gpu_is_locked_before_the_vm_starts() {
    use smoke::vm::lock::{LockDir, LockKey, Purpose, acquire_all};
    guest();
    let server = PveServer::start(Options::default()).await;
    server.add_vm(100, false, &[("hostpci0", "01:00.0,pcie=1,x-vga=1")]);
    let project = pve_project(&server);
    let locks = project.path().join("locks");
    let scenario = "name: gpu\nsteps:\n  - wait_for: {ocr: SMOKE-GUEST-READY}\n    timeout: 60s\n";
    let gpu = LockKey::gpu(format!("127.0.0.1/{}", server.node()), "0000:01:00.0");
    let purpose = Purpose { what: "another GPU job".into(), run: None };
    let held =
        acquire_all(&LockDir::new(&locks), std::slice::from_ref(&gpu), &purpose, Duration::from_secs(1)).await.unwrap();
    let (out, _) = smoke_run_locked(project.path(), scenario, &["--lock-timeout", "2s"], Some(&locks)).await;
    let text = support::text(&out);
    assert_eq!(out.status.code(), Some(3), "{text}");
    assert!(text.contains("gpu 0000:01:00.0 on 127.0.0.1/") && text.contains("another GPU job"), "{text}");
    assert!(!server.is_running(100), "the VM was started while its GPU was busy");
    drop(held);

    let (out, run) = smoke_run_locked(project.path(), scenario, &[], Some(&locks)).await;
    assert_eq!(out.status.code(), Some(0), "{}", support::text(&out));
    let resources: Vec<String> = support::events(&run.unwrap())
        .iter()
        .filter_map(|r| match &r.event {
            smoke::events::Event::Lock { resource, .. } => Some(resource.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(resources.len(), 2, "{resources:?}");
    assert!(resources[0].starts_with("vm proxmox:") && resources[1] == gpu.to_string(), "{resources:?}");
}
