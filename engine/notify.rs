//! Webhook notifications on new or persistent failures: after a run or a
//! matrix, if any (scenario, OS) it ran is now classified `new-failure` or
//! `persistent-failure`, one JSON POST goes to the configured URL. The body
//! has a human `text` (Slack and Mattermost incoming webhooks show it as is)
//! and the details in `alerts`. Webhook URLs often embed tokens: they are
//! never written to logs or results, and errors name only the host.

use std::time::Duration;

use serde::Serialize;

use crate::history::Status;

#[derive(Debug, Clone, Serialize)]
pub struct Alert {
    pub scenario: String,
    pub os: String,
    pub class: String,
    pub streak: usize,
    pub pass_rate: f64,
    pub run: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Payload {
    pub text: String,
    pub verdict: String,
    /// The report to open (a path on the machine that ran).
    pub report: String,
    pub alerts: Vec<Alert>,
}

/// The alerts among the pairs that just ran.
pub fn alerts(statuses: &[Status], ran: &[(String, String)]) -> Vec<Alert> {
    statuses
        .iter()
        .filter(|s| s.class.is_alarming() && ran.iter().any(|(sc, os)| *sc == s.scenario && *os == s.os))
        .map(|s| Alert {
            scenario: s.scenario.clone(),
            os: s.os.clone(),
            class: s.class.name().into(),
            streak: s.streak,
            pass_rate: s.pass_rate,
            run: s.last_run.clone(),
        })
        .collect()
}

pub fn payload(verdict: &str, report: &str, alerts: Vec<Alert>) -> Payload {
    let lines: Vec<String> = alerts
        .iter()
        .map(|a| {
            format!(
                "• {} on {}: {}{}",
                a.scenario,
                a.os,
                a.class,
                if a.streak > 1 { format!(" ({} runs in a row)", a.streak) } else { String::new() }
            )
        })
        .collect();
    Payload {
        text: format!("smoke: {verdict}\n{}\n{report}", lines.join("\n")),
        verdict: verdict.into(),
        report: report.into(),
        alerts,
    }
}

/// POST the payload. Errors name the host, never the full URL.
pub async fn send(url: &str, p: &Payload) -> Result<(), String> {
    let host = url.split("://").nth(1).and_then(|r| r.split('/').next()).unwrap_or("the webhook").to_string();
    let client = crate::http::client(Duration::from_secs(20))?;
    let resp = client.post(url).json(p).send().await.map_err(|e| {
        format!(
            "notifying {host}: {}",
            if e.is_timeout() { "timed out".to_string() } else { "cannot connect".to_string() }
        )
    })?;
    if !resp.status().is_success() {
        return Err(format!("notifying {host}: HTTP {}", resp.status().as_u16()));
    }
    Ok(())
}

/// After runs recorded in `history_root`: notify `url` if any of the `ran`
/// pairs is now a new or persistent failure. Returns how many alerts were sent.
pub async fn after_runs(
    url: &str,
    history_root: &std::path::Path,
    ran: &[(String, String)],
    verdict: &str,
    report: &str,
) -> Result<usize, String> {
    let statuses = crate::history::statuses(&crate::history::read(history_root));
    let alerts = alerts(&statuses, ran);
    if alerts.is_empty() {
        return Ok(0);
    }
    let n = alerts.len();
    send(url, &payload(verdict, report, alerts)).await?;
    Ok(n)
}
