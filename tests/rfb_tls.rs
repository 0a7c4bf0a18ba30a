//! Secured and tunnelled RFB against real servers: TigerVNC Xvnc with every
//! VeNCrypt subtype smoke supports (TLSNone, TLSVnc, X509None, X509Vnc,
//! X509Plain), certificates checked against a CA or a pinned fingerprint (and
//! refused when wrong), TLS-wrapped TCP through socat, websockets through
//! websockify (ws and wss), and x11vnc (libvncserver).
//!
//! Certificates are made per test run with the `openssl` command line: a CA,
//! a server certificate for 127.0.0.1 signed by it, and an unrelated CA.
//! Every test draws a known root colour with xsetroot and checks it arrives
//! through the secured connection.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use smoke::rfb::{
    ConnectOptions, Endpoint, RfbError, TlsSettings, VncClient, WebSocketEndpoint, WebSocketUrl, vnc_password_file,
};

mod xvnc_support;

use xvnc_support::{Desktop, free_port};

static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const ROOT: [u8; 3] = [0x12, 0x80, 0xc4];

fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(out.status.success(), "{cmd:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// A CA, a server certificate for 127.0.0.1 signed by it, an unrelated CA.
struct Pki {
    dir: tempfile::TempDir,
}

impl Pki {
    fn new() -> Pki {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let openssl = || {
            let mut c = Command::new("openssl");
            c.current_dir(d);
            c
        };
        for ca in ["ca", "other-ca"] {
            run(openssl()
                .args(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"])
                .args([
                    "-keyout",
                    &format!("{ca}.key"),
                    "-out",
                    &format!("{ca}.pem"),
                    "-days",
                    "2",
                    "-subj",
                    &format!("/CN=smoke test {ca}"),
                ]));
        }
        run(openssl().args(["req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"]).args([
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            "/CN=127.0.0.1",
        ]));
        std::fs::write(d.join("ext.cnf"), "subjectAltName=IP:127.0.0.1\n").unwrap();
        run(openssl().args(["x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key"]).args([
            "-CAcreateserial",
            "-out",
            "server.pem",
            "-days",
            "2",
            "-extfile",
            "ext.cnf",
        ]));
        Pki { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// `AB:CD:...` of the server certificate, as openssl prints it.
    fn fingerprint(&self) -> String {
        let out = Command::new("openssl")
            .args(["x509", "-noout", "-fingerprint", "-sha256", "-in"])
            .arg(self.path("server.pem"))
            .output()
            .unwrap();
        let text = String::from_utf8(out.stdout).unwrap();
        text.trim().split_once('=').unwrap().1.to_string()
    }
}

/// Xvnc (640x400) with the security arguments `security` gives for its
/// folder, and a known root colour.
fn desktop_in(security: impl Fn(&Path) -> Vec<String>) -> Desktop {
    let d = Desktop::start_in(|dir| {
        let mut extra = vec!["-geometry".to_string(), "640x400".into()];
        extra.extend(security(dir));
        extra
    });
    run(d.command("xsetroot").args(["-solid", "#1280c4"]));
    d
}

fn desktop(security: &[&str]) -> Desktop {
    desktop_in(|_| security.iter().map(|s| s.to_string()).collect())
}

fn opts(password: Option<&str>, tls: TlsSettings) -> ConnectOptions {
    ConnectOptions {
        password: password.map(str::to_string),
        timeout: Duration::from_secs(10),
        tls,
        ..Default::default()
    }
}

/// Connect, capture, and check the root colour arrived intact (servers that
/// poll the screen, like x11vnc, may need a moment to see it).
async fn check_screen(endpoint: &Endpoint, opts: &ConnectOptions) -> VncClient {
    let client = VncClient::connect(endpoint, opts).await.unwrap_or_else(|e| panic!("{endpoint}: {e}"));
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let frame = client.capture(Duration::from_secs(5)).await.unwrap();
        assert_eq!((frame.width(), frame.height()), (640, 400));
        // away from the centre, where x11vnc draws the pointer into the picture
        let px = frame.rgb(100, 100);
        if px == ROOT {
            return client;
        }
        assert!(Instant::now() < deadline, "root colour through {endpoint}: {px:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn ca(pki: &Pki) -> TlsSettings {
    TlsSettings { ca_file: Some(pki.path("ca.pem")), ..Default::default() }
}

fn x509_args<'a>(pki: &'a Pki, types: &'a str, extra: &[&'a str]) -> Vec<String> {
    let mut v = vec![
        "-SecurityTypes".to_string(),
        types.to_string(),
        "-X509Cert".into(),
        pki.path("server.pem").display().to_string(),
        "-X509Key".into(),
        pki.path("server.key").display().to_string(),
    ];
    v.extend(extra.iter().map(|s| s.to_string()));
    v
}

fn args(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn x509_none_with_ca_and_pin_and_refusals() {
    let _g = SERIAL.lock().await;
    let pki = Pki::new();
    let a = x509_args(&pki, "X509None", &[]);
    let d = desktop(&args(&a));
    let ep = Endpoint::tcp("127.0.0.1", d.port);

    let c = check_screen(&ep, &opts(None, ca(&pki))).await;
    c.close().await;
    // pinned fingerprint, no CA: accepted whoever signed it
    let pinned = TlsSettings { fingerprint_sha256: Some(pki.fingerprint()), ..Default::default() };
    check_screen(&ep, &opts(None, pinned)).await.close().await;
    // the same pin without colons and in lower case
    let plain = pki.fingerprint().replace(':', "").to_lowercase();
    check_screen(&ep, &opts(None, TlsSettings { fingerprint_sha256: Some(plain), ..Default::default() })).await;

    // an unrelated CA: refused, and the error names the real fingerprint
    let wrong_ca = TlsSettings { ca_file: Some(pki.path("other-ca.pem")), ..Default::default() };
    let err = VncClient::connect(&ep, &opts(None, wrong_ca)).await.unwrap_err();
    assert!(matches!(err, RfbError::Tls { .. }), "{err}");
    let text = err.to_string();
    assert!(text.contains("not accepted"), "{text}");
    assert!(text.contains(&pki.fingerprint()), "the error shows the fingerprint to pin: {text}");
    // a wrong pin: refused
    let wrong_pin = TlsSettings { fingerprint_sha256: Some("AB".repeat(32)), ..Default::default() };
    let err = VncClient::connect(&ep, &opts(None, wrong_pin)).await.unwrap_err().to_string();
    assert!(err.contains("does not match the pinned fingerprint"), "{err}");
    // the system roots do not know our CA: refused, never silently accepted
    let err = VncClient::connect(&ep, &opts(None, TlsSettings::default())).await.unwrap_err().to_string();
    assert!(err.contains("not accepted"), "{err}");
    // the right CA but a different name: refused by the host name check
    let misnamed = TlsSettings {
        ca_file: Some(pki.path("ca.pem")),
        server_name: Some("vnc.example".into()),
        ..Default::default()
    };
    let err = VncClient::connect(&ep, &opts(None, misnamed)).await.unwrap_err().to_string();
    assert!(err.contains("not accepted"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn x509_vnc_and_anonymous_tls_subtypes() {
    let _g = SERIAL.lock().await;
    let pki = Pki::new();
    for types in ["X509Vnc", "TLSVnc", "TLSNone"] {
        let dir = tempfile::tempdir().unwrap();
        let pwfile = dir.path().join("passwd");
        std::fs::write(&pwfile, vnc_password_file("s3cret")).unwrap();
        let a = x509_args(&pki, types, &["-PasswordFile", pwfile.to_str().unwrap()]);
        let d = desktop(&args(&a));
        let ep = Endpoint::tcp("127.0.0.1", d.port);
        let pw = if types == "TLSNone" { None } else { Some("s3cret") };
        let tls = if types.starts_with("X509") { ca(&pki) } else { TlsSettings::default() };
        check_screen(&ep, &opts(pw, tls.clone())).await.close().await;
        if pw.is_some() {
            let err = VncClient::connect(&ep, &opts(Some("wrong"), tls.clone())).await.unwrap_err();
            assert!(matches!(err, RfbError::AuthFailed { .. }), "{types}: {err}");
            let err = VncClient::connect(&ep, &opts(None, tls)).await.unwrap_err().to_string();
            assert!(err.contains("set a password"), "{types}: {err}");
        } else {
            // a pinned certificate cannot be checked over anonymous TLS: refused
            let pinned = TlsSettings { fingerprint_sha256: Some(pki.fingerprint()), ..Default::default() };
            let err = VncClient::connect(&ep, &opts(None, pinned)).await.unwrap_err().to_string();
            assert!(err.contains("only anonymous TLS"), "{err}");
        }
        drop(d);
    }
}

/// X509Plain: Xvnc checks the username and password with PAM. A PAM service
/// of its own (pam_unix) and a throw-away user with a known password.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn x509_plain_checks_username_and_password_with_pam() {
    let _g = SERIAL.lock().await;
    // CI runs as root: creating a user and a PAM service needs it.
    assert_eq!(unsafe { libc::geteuid() }, 0, "this test creates a system user and a PAM service: run as root");
    let user = "smokeplain";
    let service = "smoke-vnc-test";
    std::fs::write(format!("/etc/pam.d/{service}"), "auth required pam_unix.so\naccount required pam_unix.so\n")
        .unwrap();
    let exists = Command::new("id").arg(user).output().unwrap().status.success();
    if !exists {
        run(Command::new("useradd").args(["--no-create-home", "--shell", "/usr/sbin/nologin", user]));
    }
    let mut chpasswd = Command::new("chpasswd").stdin(Stdio::piped()).spawn().unwrap();
    {
        use std::io::Write;
        writeln!(chpasswd.stdin.take().unwrap(), "{user}:Plain-pw-42").unwrap();
    }
    assert!(chpasswd.wait().unwrap().success());

    let pki = Pki::new();
    let a = x509_args(&pki, "X509Plain", &["-PlainUsers", user, "-PAMService", service]);
    let d = desktop(&args(&a));
    let ep = Endpoint::tcp("127.0.0.1", d.port);
    let mut o = opts(Some("Plain-pw-42"), ca(&pki));
    o.username = Some(user.into());
    check_screen(&ep, &o).await.close().await;
    o.password = Some("wrong-password".into());
    let err = VncClient::connect(&ep, &o).await.unwrap_err();
    assert!(matches!(err, RfbError::AuthFailed { .. }), "{err}\n{}", d.log());
    // without a username the error says what to set
    let err = VncClient::connect(&ep, &opts(Some("x"), ca(&pki))).await.unwrap_err().to_string();
    assert!(err.contains("username"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_wrapped_tcp_through_socat() {
    let _g = SERIAL.lock().await;
    let pki = Pki::new();
    let mut d = desktop(&["-SecurityTypes", "None"]);
    let port = free_port();
    let listen = format!(
        "OPENSSL-LISTEN:{port},bind=127.0.0.1,reuseaddr,fork,cert={},key={},verify=0",
        pki.path("server.pem").display(),
        pki.path("server.key").display()
    );
    let vnc_port = d.port;
    d.spawn_listener(Command::new("socat").args([&listen, &format!("TCP:127.0.0.1:{vnc_port}")]), port);
    let ep = Endpoint::Tls { host: "127.0.0.1".into(), port, tls: ca(&pki) };
    check_screen(&ep, &opts(None, TlsSettings::default())).await.close().await;
    let wrong = Endpoint::Tls {
        host: "127.0.0.1".into(),
        port,
        tls: TlsSettings { ca_file: Some(pki.path("other-ca.pem")), ..Default::default() },
    };
    let err = VncClient::connect(&wrong, &opts(None, TlsSettings::default())).await.unwrap_err().to_string();
    assert!(err.contains("not accepted"), "{err}");
}

fn websockify(d: &mut Desktop, port: u16, tls: Option<&Pki>) {
    let mut cmd = Command::new("websockify");
    if let Some(pki) = tls {
        cmd.arg("--cert").arg(pki.path("server.pem")).arg("--key").arg(pki.path("server.key")).arg("--ssl-only");
    }
    let vnc_port = d.port;
    cmd.args([format!("127.0.0.1:{port}"), format!("127.0.0.1:{vnc_port}")]);
    d.spawn_listener(&mut cmd, port);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_through_websockify_ws_and_wss() {
    let _g = SERIAL.lock().await;
    let pki = Pki::new();
    let mut d = desktop_in(|dir| xvnc_support::password_args(dir, "ws-pass"));
    let (ws_port, wss_port) = (free_port(), free_port());
    websockify(&mut d, ws_port, None);
    let ws = Endpoint::WebSocket(WebSocketEndpoint {
        url: WebSocketUrl::parse(&format!("ws://127.0.0.1:{ws_port}/websockify")).unwrap(),
        headers: vec![("Cookie".into(), "token=secret-cookie".into())],
        tls: TlsSettings::default(),
    });
    let c = check_screen(&ws, &opts(Some("ws-pass"), TlsSettings::default())).await;
    // full-screen updates span many websocket frames: a second capture after a change
    run(d.command("xsetroot").args(["-solid", "#40ff20"]));
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let f = c.capture(Duration::from_secs(5)).await.unwrap();
        if f.rgb(10, 10) == [0x40, 0xff, 0x20] {
            break;
        }
        assert!(Instant::now() < deadline, "the change did not arrive over the websocket");
    }
    c.close().await;
    // the endpoint's Debug and Display never show header values or the query
    let shown = format!("{ws} {ws:?}");
    assert!(!shown.contains("secret-cookie"), "{shown}");

    websockify(&mut d, wss_port, Some(&pki));
    let wss = |tls: TlsSettings| {
        Endpoint::WebSocket(WebSocketEndpoint {
            url: WebSocketUrl::parse(&format!("wss://127.0.0.1:{wss_port}/?token=abc")).unwrap(),
            headers: Vec::new(),
            tls,
        })
    };
    run(d.command("xsetroot").args(["-solid", "#1280c4"]));
    check_screen(&wss(ca(&pki)), &opts(Some("ws-pass"), TlsSettings::default())).await.close().await;
    let pinned = TlsSettings { fingerprint_sha256: Some(pki.fingerprint()), ..Default::default() };
    check_screen(&wss(pinned), &opts(Some("ws-pass"), TlsSettings::default())).await.close().await;
    let err = VncClient::connect(&wss(TlsSettings::default()), &opts(Some("ws-pass"), TlsSettings::default()))
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("not accepted") && err.contains(&pki.fingerprint()), "{err}");
    // a plain ws:// client against the TLS-only port fails with a clear error
    let err = VncClient::connect(
        &Endpoint::WebSocket(WebSocketEndpoint {
            url: WebSocketUrl::parse(&format!("ws://127.0.0.1:{wss_port}/")).unwrap(),
            headers: Vec::new(),
            tls: TlsSettings::default(),
        }),
        &opts(Some("ws-pass"), TlsSettings::default()),
    )
    .await
    .unwrap_err();
    assert!(!matches!(err, RfbError::AuthFailed { .. }), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn x11vnc_with_password() {
    let _g = SERIAL.lock().await;
    let mut d = desktop(&["-SecurityTypes", "None"]);
    let pwfile = d.path("x11vnc.pass");
    run(Command::new("x11vnc").args(["-storepasswd", "x11-pass"]).arg(&pwfile));
    let port = free_port();
    let display = format!(":{}", d.display);
    d.spawn_listener(
        Command::new("x11vnc")
            .args(["-display", &display, "-rfbport", &port.to_string(), "-localhost", "-forever", "-shared"])
            .args(["-noxdamage", "-rfbauth"])
            .arg(&pwfile),
        port,
    );
    let ep = Endpoint::tcp("127.0.0.1", port);
    let c = check_screen(&ep, &opts(Some("x11-pass"), TlsSettings::default())).await;
    assert!(!c.desktop_name().is_empty());
    c.close().await;
    let err = VncClient::connect(&ep, &opts(Some("nope"), TlsSettings::default())).await.unwrap_err();
    assert!(matches!(err, RfbError::AuthFailed { .. } | RfbError::Disconnected { .. }), "{err}");
}
