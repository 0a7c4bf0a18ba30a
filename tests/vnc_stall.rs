//! Stalls and disconnects with a real Xvnc: a server stopped with SIGSTOP
//! (the connection stays open, nothing arrives) and a server killed and
//! started again on the same port. With reconnection on, captures and input
//! carry on within their time limits; without a server they fail as
//! disconnected once the limit is spent.

mod xvnc_support;

use std::time::{Duration, Instant};

use smoke::rfb::{ConnectOptions, RfbError, VncClient};
use xvnc_support::{Desktop, poll, read_lines};

static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

async fn connect(desktop: &Desktop) -> VncClient {
    let opts = ConnectOptions { timeout: Duration::from_secs(10), ..Default::default() };
    let client = VncClient::connect(&desktop.endpoint(), &opts).await.expect("connect to Xvnc");
    client.set_reconnect(true);
    client
}

#[tokio::test]
async fn a_stopped_server_is_reconnected_once_it_runs_again() {
    let _serial = SERIAL.lock().await;
    let desktop = Desktop::start();
    let client = connect(&desktop).await;
    client.capture(Duration::from_secs(5)).await.unwrap();
    desktop.signal(libc::SIGSTOP);
    let pid = desktop.xvnc.id() as i32;
    let resume = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(5500));
        unsafe { libc::kill(pid, libc::SIGCONT) };
    });
    let started = Instant::now();
    let frame = client.capture(Duration::from_secs(15)).await.unwrap();
    let took = started.elapsed();
    resume.join().unwrap();
    assert_eq!((frame.width(), frame.height()), (1280, 720));
    assert!(took >= Duration::from_millis(5400), "answered while stopped? {took:?}");
    assert_eq!(client.reconnects(), 1, "the stalled session was replaced");
    assert!(client.is_connected());
}

#[tokio::test]
async fn a_restarted_server_is_reconnected_and_a_gone_one_is_an_error_after_the_budget() {
    let _serial = SERIAL.lock().await;
    let mut desktop = Desktop::start_raw_keyboard();
    let client = connect(&desktop).await;
    client.capture(Duration::from_secs(5)).await.unwrap();
    desktop.restart_server();
    // the capture notices the lost connection and connects to the new server
    client.capture(Duration::from_secs(10)).await.unwrap();
    assert_eq!(client.reconnects(), 1);
    // input works on the new session (typed into an xterm on the new server)
    let file = desktop.path("after.txt");
    let window = desktop.xterm("after", "60x5+0+0", &format!("exec cat > '{}'", file.display()));
    let (x, y) = desktop.centre(&window);
    client.pointer(x as u16, y as u16, 0).await.unwrap();
    assert!(poll(Duration::from_secs(5), || (desktop.pointer() == (x, y)).then_some(())).is_some());
    for (sym, code) in [(0x6f, 0x18), (0x6b, 0x25), (0xff0d, 0x1c)] {
        client.key_code(sym, code, true).await.unwrap();
        client.key_code(sym, code, false).await.unwrap();
    }
    assert_eq!(read_lines(&file, 1, Duration::from_secs(5)), "ok\n");

    // the server gone for good: a disconnection error once the budget is spent
    xvnc_support::terminate(&mut desktop.xvnc);
    let started = Instant::now();
    let err = client.capture(Duration::from_secs(2)).await.unwrap_err();
    assert!(started.elapsed() >= Duration::from_millis(1900), "{:?}", started.elapsed());
    assert!(matches!(err, RfbError::Disconnected { .. }), "{err}");
    assert!(err.to_string().contains("did not succeed in time"), "{err}");
}

/// `smoke run` on a `vnc` target whose server restarts between two steps:
/// the run passes on a new connection; a server gone for good is an
/// infrastructure error (exit 3) naming the failed reconnection.
#[test]
fn a_run_survives_a_server_restart_and_reports_a_dead_server_as_infrastructure() {
    let _serial = SERIAL.blocking_lock();
    let mut desktop = Desktop::start();
    let project = tempfile::tempdir().unwrap();
    for d in ["scenarios", "routines", "reference"] {
        std::fs::create_dir_all(project.path().join(d)).unwrap();
    }
    std::fs::write(
        project.path().join("inventory.yaml"),
        format!(
            "default: lab\ntargets:\n  lab:\n    backend: vnc\n    vnc: {{host: 127.0.0.1, port: {}}}\n",
            desktop.port
        ),
    )
    .unwrap();
    std::fs::write(
        project.path().join("scenarios/restart.yaml"),
        "steps:\n  - screenshot: before\n  - wait: 2s\n  - screenshot: after\n  - move: [10, 10]\n",
    )
    .unwrap();
    let run = |results: &std::path::Path| {
        std::process::Command::new(env!("CARGO_BIN_EXE_smoke"))
            .current_dir(project.path())
            .env_remove("SMOKE_INVENTORY")
            .args(["run", "scenarios/restart.yaml", "--results"])
            .arg(results)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    let results = tempfile::tempdir().unwrap();
    let child = run(results.path());
    std::thread::sleep(Duration::from_millis(1000));
    desktop.restart_server();
    let out = child.wait_with_output().unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(text.contains("reconnected"), "{text}");

    let results = tempfile::tempdir().unwrap();
    let child = run(results.path());
    std::thread::sleep(Duration::from_millis(1000));
    xvnc_support::terminate(&mut desktop.xvnc);
    let out = child.wait_with_output().unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.status.code(), Some(3), "{text}");
    assert!(text.contains("did not succeed in time"), "{text}");
}
