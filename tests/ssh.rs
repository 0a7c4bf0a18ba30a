//! The SSH client against a real OpenSSH sshd on loopback (started by each
//! test with its own config and generated keys): authentication, host key
//! verification, exec semantics, timeouts that kill, capped output, file
//! transfer, reconnects and waiting for SSH.

mod ssh_support;

use std::time::{Duration, Instant};

use smoke::guest::Shell;
use smoke::scenario::template::shquote;
use smoke::secrets::{SecretSource, SecretStore};
use smoke::ssh::{ExecRequest, SshClient, SshError, SshSettings};
use ssh_support::*;

fn posix(script: &str, timeout: Duration) -> ExecRequest {
    ExecRequest::posix(script, &[], timeout)
}

const T: Duration = Duration::from_secs(20);

async fn connect(s: &SshSettings) -> SshClient {
    SshClient::connect(s, &SecretStore::default()).await.unwrap_or_else(|e| panic!("connect: {e}"))
}

fn ssh_keygen_fingerprint(pubkey_file: &std::path::Path) -> String {
    let o = std::process::Command::new("ssh-keygen").arg("-lf").arg(pubkey_file).output().unwrap();
    String::from_utf8_lossy(&o.stdout).split_whitespace().nth(1).unwrap().to_string()
}

#[tokio::test]
async fn key_auth_exit_codes_signals_and_one_reused_connection() {
    let d = Sshd::start();
    let c = connect(&d.settings()).await;
    let o = c.exec(&posix("id -un; echo err >&2; exit 3", T)).await.unwrap();
    assert_eq!(o.exit_code, Some(3));
    assert_eq!(o.stdout_text(), format!("{USER}\n"));
    assert_eq!(o.stderr_text(), "err\n", "the pid announcement is not part of stderr");
    assert!(o.pid.is_some_and(|p| p > 1));
    let o = c.exec(&posix("kill -TERM $$", T)).await.unwrap();
    assert_eq!((o.exit_code, o.signal.as_deref()), (None, Some("TERM")));
    let o = c.exec(&posix("kill -KILL $$", T)).await.unwrap();
    assert_eq!(o.signal.as_deref(), Some("KILL"));
    for i in 0..10 {
        let o = c.exec(&posix(&format!("echo {i}"), T)).await.unwrap();
        assert_eq!(o.stdout_text(), format!("{i}\n"));
    }
    assert_eq!(c.connections_made(), 1, "every command reused the connection");
    c.close().await;
}

#[tokio::test]
async fn hostile_strings_reach_the_remote_shell_unharmed() {
    let d = Sshd::start();
    let c = connect(&d.settings()).await;
    let hostile = [
        "a'b",
        "$(touch /tmp/pwned)",
        "`id`",
        "a\"b\\c",
        "",
        "x\ny\n",
        "'; echo pwned; '",
        "-n",
        "*",
        "~",
        "%s%n",
        "tab\there",
        "ünïcödé ✓",
        "${HOME}",
        "a\\'b",
    ];
    for h in hostile {
        let o = c.exec(&posix(&format!("printf '%s' {}", shquote(h)), T)).await.unwrap();
        assert_eq!(o.stdout_text(), h, "as an argument");
        let env = [("SMOKE_X".to_string(), h.to_string())];
        let o = c.exec(&ExecRequest::posix("printf '%s' \"$SMOKE_X\"", &env, T)).await.unwrap();
        assert_eq!(o.stdout_text(), h, "as an exported variable");
    }
    assert!(!std::path::Path::new("/tmp/pwned").exists());
}

#[tokio::test]
async fn a_timeout_kills_the_remote_command_and_its_children() {
    let d = Sshd::start();
    let c = connect(&d.settings()).await;
    let tok = token("smoke-sleeper");
    let script = format!("sh -c 'while :; do sleep 1; done' {tok} & sh -c 'while :; do sleep 1; done' {tok}");
    let seen = {
        let tok = tok.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(700)).await;
            processes_with(&tok).len()
        })
    };
    let start = Instant::now();
    let o = c.exec(&posix(&script, Duration::from_millis(1500))).await.unwrap();
    assert!(o.timed_out);
    assert!(start.elapsed() < Duration::from_secs(15), "{:?}", start.elapsed());
    assert!(seen.await.unwrap() >= 2, "both loops ran before the timeout");
    assert!(eventually(Duration::from_secs(5), || processes_with(&tok).is_empty()), "left: {:?}", processes_with(&tok));
    // the connection is still good
    let o = c.exec(&posix("echo still here", T)).await.unwrap();
    assert_eq!(o.stdout_text(), "still here\n");
}

#[tokio::test]
async fn large_output_is_capped_to_its_tail() {
    let d = Sshd::start();
    let c = connect(&d.settings()).await;
    let req = posix("head -c 3000000 /dev/zero | tr '\\0' x; head -c 200000 /dev/zero | tr '\\0' y >&2; printf END", T)
        .with_caps(65536, 4096);
    let o = c.exec(&req).await.unwrap();
    assert_eq!(o.exit_code, Some(0));
    assert_eq!(o.stdout.len(), 65536);
    assert_eq!(o.stdout_dropped, 3000000 + 3 - 65536);
    assert!(o.stdout.ends_with(b"xxEND"));
    assert_eq!((o.stderr.len(), o.stderr_dropped), (4096, 200000 - 4096));
    assert!(o.stdout_text().starts_with("[... 2934467 earlier bytes dropped ...]\n"));
}

#[tokio::test]
async fn upload_and_download_round_trip() {
    let d = Sshd::start();
    let c = connect(&d.settings()).await;
    let data: Vec<u8> = (0..(1 << 20) + 7).map(|i: u32| (i.wrapping_mul(2654435761) >> 13) as u8).collect();
    let path = format!("/tmp/{}.bin", token("smoke-upload"));
    c.upload(Shell::Posix, &path, &data).await.unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), data, "the file on the target");
    let back = c.download(Shell::Posix, &path, 2 << 20).await.unwrap();
    assert_eq!(back, data);
    let e = c.download(Shell::Posix, &path, 1000).await.unwrap_err().to_string();
    assert!(e.contains("larger than 1000 bytes"), "{e}");
    let e = c.download(Shell::Posix, "/nonexistent/file", 1000).await.unwrap_err().to_string();
    assert!(e.contains("No such file"), "{e}");
    let e = c.upload(Shell::Posix, "/proc/nope/x", b"x").await.unwrap_err().to_string();
    assert!(e.contains("uploading 1 bytes to /proc/nope/x"), "{e}");
    std::fs::remove_file(&path).unwrap();
}

#[tokio::test]
async fn an_encrypted_key_needs_its_passphrase() {
    let d = Sshd::start();
    let key = d.dir.path().join("locked_ed25519");
    keygen(&key, "correct horse battery");
    let authorized = d.dir.path().join("keys").join(USER);
    let mut auth = std::fs::read_to_string(&authorized).unwrap();
    auth.push_str(&std::fs::read_to_string(key.with_extension("pub")).unwrap());
    std::fs::write(&authorized, auth).unwrap();
    let pass_file = d.dir.path().join("passphrase");
    std::fs::write(&pass_file, "correct horse battery\n").unwrap();

    let mut s = d.settings();
    s.key = Some(key.clone());
    let e = SshClient::connect(&s, &SecretStore::default()).await.unwrap_err();
    assert!(matches!(e, SshError::Key { .. }), "{e}");
    assert!(e.to_string().contains("encrypted: give its passphrase with ssh.key_passphrase"), "{e}");

    let wrong = d.dir.path().join("wrong");
    std::fs::write(&wrong, "wrong").unwrap();
    s.key_passphrase = Some(SecretSource::File(wrong));
    let e = SshClient::connect(&s, &SecretStore::default()).await.unwrap_err();
    assert!(matches!(e, SshError::Key { .. }), "{e}");

    s.key_passphrase = Some(SecretSource::File(pass_file));
    let store = SecretStore::default();
    let c = SshClient::connect(&s, &store).await.unwrap();
    assert_eq!(c.exec(&posix("echo ok", T)).await.unwrap().stdout_text(), "ok\n");
    assert_eq!(store.redactor().redact("pw: correct horse battery"), "pw: ******", "the passphrase is masked");
}

#[tokio::test]
async fn password_authentication() {
    let d = Sshd::start_with(SshdOptions { password_auth: true, ..Default::default() });
    let pw = Password::set();
    let file = d.dir.path().join("pw");
    let mut s = d.settings();
    s.key = None;
    std::fs::write(&file, "not-the-password").unwrap();
    s.password = Some(SecretSource::File(file.clone()));
    let e = SshClient::connect(&s, &SecretStore::default()).await.unwrap_err();
    let text = e.to_string();
    assert!(matches!(e, SshError::Auth { .. }), "{text}");
    assert!(text.contains("tried: password") && text.contains("accepts: publickey, password"), "{text}");
    std::fs::write(&file, &pw.value).unwrap();
    let store = SecretStore::default();
    let c = SshClient::connect(&s, &store).await.unwrap();
    assert_eq!(c.exec(&posix("id -un", T)).await.unwrap().stdout_text(), format!("{USER}\n"));
    assert!(store.redactor().is_secret_in(&pw.value));
}

/// An ssh-agent started for the test, holding the user key.
struct Agent {
    child: std::process::Child,
    socket: std::path::PathBuf,
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn agent_authentication() {
    let d = Sshd::start();
    let socket = d.dir.path().join("agent.sock");
    let child = std::process::Command::new("ssh-agent")
        .arg("-D")
        .arg("-a")
        .arg(&socket)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let agent = Agent { child, socket };
    assert!(eventually(Duration::from_secs(5), || agent.socket.exists()));
    let mut s = d.settings();
    s.key = None;
    s.agent = true;
    s.agent_socket = Some(agent.socket.clone());
    // an empty agent cannot log in
    let e = SshClient::connect(&s, &SecretStore::default()).await.unwrap_err().to_string();
    assert!(e.contains("tried: agent (0 keys)"), "{e}");
    let added =
        std::process::Command::new("ssh-add").arg(&d.user_key).env("SSH_AUTH_SOCK", &agent.socket).output().unwrap();
    assert!(added.status.success(), "{}", String::from_utf8_lossy(&added.stderr));
    let c = SshClient::connect(&s, &SecretStore::default()).await.unwrap();
    assert_eq!(c.exec(&posix("echo via agent", T)).await.unwrap().stdout_text(), "via agent\n");
}

#[tokio::test]
async fn host_keys_are_verified() {
    let d = Sshd::start();
    let fp = ssh_keygen_fingerprint(&d.host_key.with_extension("pub"));
    let kh = d.dir.path().join("kh");
    let mut s = d.settings();
    s.known_hosts = vec![kh.clone()];

    // a wildcard line with a negation, tab separated
    let (algo, blob) = d.host_key_pub.split_once(' ').unwrap();
    std::fs::write(&kh, format!("[10.9.9.9]:1,!nothing*\t{algo} {blob}\n[127.0.0.?]:{},!x\t{algo}\t{blob}\n", d.port))
        .unwrap();
    connect(&s).await.close().await;

    // unknown: refused, with the fingerprint and what to do
    std::fs::write(&kh, "").unwrap();
    let e = SshClient::connect(&s, &SecretStore::default()).await.unwrap_err();
    let text = e.to_string();
    assert!(matches!(e, SshError::HostKeyUnknown { .. }), "{text}");
    assert!(text.contains(&fp) && text.contains("learn_host_key: true") && text.contains("ssh-keyscan"), "{text}");

    // changed: another key is stored for this host; learning does not override it
    let other = d.dir.path().join("other_key");
    keygen(&other, "");
    let other_pub = std::fs::read_to_string(other.with_extension("pub")).unwrap();
    let stored =
        format!("[127.0.0.1]:{} {}\n", d.port, other_pub.split_whitespace().take(2).collect::<Vec<_>>().join(" "));
    std::fs::write(&kh, &stored).unwrap();
    s.learn_host_key = true;
    let e = SshClient::connect(&s, &SecretStore::default()).await.unwrap_err();
    let text = e.to_string();
    assert!(matches!(e, SshError::HostKeyChanged { .. }), "{text}");
    assert!(text.contains("HOST KEY CHANGED") && text.contains(&fp), "{text}");
    assert!(text.contains(&ssh_keygen_fingerprint(&other.with_extension("pub"))), "{text}");
    assert_eq!(std::fs::read_to_string(&kh).unwrap(), stored, "a changed key is never learned");

    // opt-in learning of an unknown key, then known without learning
    let fresh = d.dir.path().join("sub/known_hosts");
    s.known_hosts = vec![fresh.clone()];
    connect(&s).await.close().await;
    let learned = std::fs::read_to_string(&fresh).unwrap();
    assert_eq!(learned, format!("[127.0.0.1]:{} {}\n", d.port, d.host_key_pub));
    s.learn_host_key = false;
    connect(&s).await.close().await;

    // pinned fingerprints: only the pinned key is accepted
    s.known_hosts = vec![kh.clone()]; // holds the other key: not consulted when pinned
    s.host_keys = vec![fp.clone()];
    connect(&s).await.close().await;
    s.host_keys = vec![ssh_keygen_fingerprint(&other.with_extension("pub"))];
    let e = SshClient::connect(&s, &SecretStore::default()).await.unwrap_err();
    assert!(matches!(e, SshError::HostKeyChanged { .. }), "{e}");
    assert!(e.to_string().contains("the inventory pins"), "{e}");
}

#[tokio::test]
async fn a_dropped_connection_is_reestablished_once() {
    let d = Sshd::start();
    let c = connect(&d.settings()).await;
    assert_eq!(c.exec(&posix("echo 1", T)).await.unwrap().stdout_text(), "1\n");
    // dropped while idle: the next command reconnects
    d.drop_connections();
    assert_eq!(c.exec(&posix("echo 2", T)).await.unwrap().stdout_text(), "2\n");
    assert_eq!(c.connections_made(), 2);
    // dropped during a command: that command reports it (it is not run twice), the next one works
    let long = posix("sleep 20", T);
    let (r, _) = tokio::join!(c.exec(&long), async {
        tokio::time::sleep(Duration::from_millis(800)).await;
        d.drop_connections();
    });
    let e = r.unwrap_err();
    assert!(matches!(e, SshError::Dropped { .. }), "{e}");
    assert_eq!(c.exec(&posix("echo 3", T)).await.unwrap().stdout_text(), "3\n");
    assert_eq!(c.connections_made(), 3);
}

#[tokio::test]
async fn wait_for_ssh_within_a_budget() {
    // nothing listens: the budget runs out with a clear message
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut s = SshSettings::new("127.0.0.1", port, USER);
    s.key = Some("/nonexistent".into());
    let start = Instant::now();
    let e = SshClient::wait_for(&s, &SecretStore::default(), Duration::from_millis(1500)).await.unwrap_err();
    assert!(matches!(e, SshError::Timeout { .. }), "{e}");
    assert!(e.to_string().contains("waiting for SSH on smoke-ssh@127.0.0.1"), "{e}");
    assert!(start.elapsed() < Duration::from_secs(10));

    // sshd comes up late: waiting succeeds
    let d = Sshd::start();
    let s = d.settings();
    let pid = d.pid();
    // SAFETY: pausing and resuming the sshd this test started.
    unsafe { libc::kill(pid as i32, libc::SIGSTOP) };
    let resume = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(1500));
        unsafe { libc::kill(pid as i32, libc::SIGCONT) };
    });
    let mut quick = s.clone();
    quick.connect_timeout = Duration::from_millis(500);
    let start = Instant::now();
    let c = SshClient::wait_for(&quick, &SecretStore::default(), Duration::from_secs(30)).await.unwrap();
    assert!(start.elapsed() >= Duration::from_millis(1000), "it had to wait");
    assert_eq!(c.exec(&posix("echo up", T)).await.unwrap().stdout_text(), "up\n");
    resume.join().unwrap();

    // an authentication problem is not waited out
    let mut bad = s.clone();
    bad.key = Some(d.dir.path().join("nonexistent-key"));
    let start = Instant::now();
    let e = SshClient::wait_for(&bad, &SecretStore::default(), Duration::from_secs(30)).await.unwrap_err();
    assert!(matches!(e, SshError::Key { .. }), "{e}");
    assert!(start.elapsed() < Duration::from_secs(10));
}
