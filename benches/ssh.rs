//! Command latency over SSH, side by side with the reference approach (one
//! `ssh` process per command, as tools in this field shell out to it):
//! smoke on a reused connection, smoke with a new connection per command,
//! and the OpenSSH client. Needs root (it starts a private sshd on loopback
//! with a test user, like the tests).
//!
//! `cargo bench --bench ssh [-- N]`

#[path = "../tests/ssh_support/mod.rs"]
mod ssh_support;

use std::time::{Duration, Instant};

use smoke::secrets::SecretStore;
use smoke::ssh::{ExecRequest, SshClient};

fn median(mut v: Vec<Duration>) -> f64 {
    v.sort();
    v[v.len() / 2].as_secs_f64() * 1000.0
}

fn main() {
    let n: usize = std::env::args().skip(1).find_map(|a| a.parse().ok()).unwrap_or(30);
    let sshd = ssh_support::Sshd::start();
    let settings = sshd.settings();
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    let req = ExecRequest::posix("true", &[], Duration::from_secs(30));

    let reused = rt.block_on(async {
        let c = SshClient::connect(&settings, &SecretStore::default()).await.unwrap();
        c.exec(&req).await.unwrap();
        let mut t = Vec::new();
        for _ in 0..n {
            let s = Instant::now();
            assert!(c.exec(&req).await.unwrap().success());
            t.push(s.elapsed());
        }
        t
    });
    let fresh = rt.block_on(async {
        let mut t = Vec::new();
        for _ in 0..n {
            let s = Instant::now();
            let c = SshClient::connect(&settings, &SecretStore::default()).await.unwrap();
            assert!(c.exec(&req).await.unwrap().success());
            c.close().await;
            t.push(s.elapsed());
        }
        t
    });
    let mut cli = Vec::new();
    for _ in 0..n {
        let s = Instant::now();
        let o = std::process::Command::new("ssh")
            .args(["-q", "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes", "-i"])
            .arg(&sshd.user_key)
            .arg("-o")
            .arg(format!("UserKnownHostsFile={}", sshd.known_hosts.display()))
            .args(["-p", &sshd.port.to_string(), &format!("{}@{}", ssh_support::USER, sshd.host), "true"])
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        cli.push(s.elapsed());
    }
    let (r, f, c) = (median(reused), median(fresh), median(cli));
    println!("median latency of `true` over SSH, {n} runs each:");
    println!("  smoke, reused connection      {r:8.1} ms   1.00");
    println!("  smoke, new connection each    {f:8.1} ms   {:.2}x", f / r);
    println!("  ssh CLI, one process each     {c:8.1} ms   {:.2}x", c / r);
}
