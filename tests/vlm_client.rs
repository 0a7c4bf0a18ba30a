//! The VLM client against an in-test OpenAI-compatible server: answers,
//! reasoning models, failover, rate limits, timeouts, garbage, the cache,
//! budgets, preflight and secrets.

mod support;

use std::time::Duration;

use smoke::frame::Frame;
use smoke::secrets::{SecretSource, SecretStore};
use smoke::vlm::answer::{Grid, Verdict};
use smoke::vlm::config::{Budget, ModelConfig, Price, VlmConfig};
use smoke::vlm::{Vlm, VlmError};
use support::openai::{Reply, Server};

fn config(endpoints: Vec<String>, cache: Option<std::path::PathBuf>) -> VlmConfig {
    VlmConfig {
        endpoints,
        api_key: None,
        judge: ModelConfig { model: "judge-vl".into(), max_tokens: 256, grid: Grid::Auto },
        locate: Some(ModelConfig { model: "locator".into(), max_tokens: 64, grid: Grid::Thousand }),
        timeout: Duration::from_secs(2),
        retries: 1,
        budget: Budget::default(),
        price: Price { input_per_1k: 0.001, output_per_1k: 0.002 },
        cache,
        warmup: true,
    }
}

fn screen(marker: u8) -> Frame {
    let mut f = Frame::new(320, 200);
    f.set_rgb(10, 10, [marker, 0, 0]);
    f
}

#[tokio::test]
async fn judges_yes_no_with_reasoning_models_and_sends_the_screen() {
    let s = Server::start(&["judge-vl", "locator"], |r| {
        let red = r.image.as_ref().map(|f| f.rgb(10, 10)[0]).unwrap_or(0);
        match (r.prompt.contains("login form"), red) {
            (true, 1) => Reply::text("<think>The form has two fields... wait, yes</think>\nYes."),
            (true, _) => {
                Reply::Answer { content: String::new(), reasoning: Some("Looking closely </think> no".into()) }
            }
            _ => Reply::text("I am not sure what you mean"),
        }
    })
    .await;
    let vlm = Vlm::new(config(vec![s.base.clone()], None), &SecretStore::default(), false).unwrap();
    let a = vlm.judge("Is the login form visible?", &screen(1), 0).await.unwrap();
    assert_eq!((a.verdict, a.answer.as_str()), (Some(Verdict::Yes), "Yes."));
    assert_eq!(a.prompt_tokens, 1000);
    assert!((a.cost - 0.00102).abs() < 1e-9, "{}", a.cost);
    let b = vlm.judge("Is the login form visible?", &screen(2), 0).await.unwrap();
    assert_eq!(b.verdict, Some(Verdict::No), "reasoning_content used when content is empty");
    let c = vlm.judge("Something else?", &screen(1), 0).await.unwrap();
    assert_eq!(c.verdict, Some(Verdict::Unparseable));
    let reqs = s.chat_requests();
    assert_eq!(reqs.len(), 3);
    assert_eq!(reqs[0].model, "judge-vl");
    assert_eq!(reqs[0].image.as_ref().unwrap().rgb(10, 10), [1, 0, 0], "the exact screen arrived as PNG");
    assert_eq!(reqs[0].temperature, Some(0.0));
}

#[tokio::test]
async fn fails_over_on_5xx_timeouts_and_garbage_and_keeps_the_working_endpoint() {
    let bad = Server::start(&["judge-vl"], |_| Reply::Status { code: 503, retry_after: None }).await;
    let slow =
        Server::start(&["judge-vl"], |_| Reply::Delay(Duration::from_secs(5), Box::new(Reply::text("yes")))).await;
    let junk = Server::start(&["judge-vl"], |_| Reply::Garbage).await;
    let good = Server::start(&["judge-vl"], |_| Reply::text("yes")).await;
    let cfg = config(vec![bad.base.clone(), slow.base.clone(), junk.base.clone(), good.base.clone()], None);
    let vlm = Vlm::new(cfg, &SecretStore::default(), false).unwrap();
    let a = vlm.judge("q?", &screen(1), 0).await.unwrap();
    assert_eq!(a.endpoint.as_deref(), Some(good.base.as_str()));
    assert_eq!(bad.chat_requests().len(), 2, "5xx is retried once, then the next endpoint");
    assert_eq!(slow.chat_requests().len(), 2, "a timeout too");
    assert_eq!(junk.chat_requests().len(), 1, "garbage moves on at once");
    // the working endpoint is now tried first
    vlm.judge("q2?", &screen(2), 0).await.unwrap();
    assert_eq!(bad.chat_requests().len(), 2);
    assert_eq!(good.chat_requests().len(), 2);
}

#[tokio::test]
async fn honours_retry_after_on_429() {
    let s = Server::start(&["judge-vl"], |_| Reply::text("no")).await;
    s.script([Reply::Status { code: 429, retry_after: Some(1) }]);
    let vlm = Vlm::new(config(vec![s.base.clone()], None), &SecretStore::default(), false).unwrap();
    assert_eq!(vlm.judge("q?", &screen(1), 0).await.unwrap().verdict, Some(Verdict::No));
    let r = s.chat_requests();
    assert_eq!(r.len(), 2);
    assert!(r[1].at - r[0].at >= Duration::from_millis(950), "waited for Retry-After: {:?}", r[1].at - r[0].at);
}

#[tokio::test]
async fn every_endpoint_failing_is_an_error_naming_each() {
    let a = Server::start(&["judge-vl"], |_| Reply::Drop).await;
    let cfg = config(vec![a.base.clone(), "http://127.0.0.1:9/v1".into()], None);
    let vlm = Vlm::new(cfg, &SecretStore::default(), false).unwrap();
    match vlm.judge("q?", &screen(1), 0).await {
        Err(VlmError::Unavailable { attempts }) => {
            assert!(attempts.iter().any(|x| x.contains(&a.base)), "{attempts:?}");
            assert!(attempts.iter().any(|x| x.contains("127.0.0.1:9")), "{attempts:?}");
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn the_cache_makes_a_repeat_free_and_survives_restarts() {
    let s = Server::start(&["judge-vl"], |_| Reply::text("yes")).await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("cache.jsonl");
    let vlm = Vlm::new(config(vec![s.base.clone()], Some(file.clone())), &SecretStore::default(), true).unwrap();
    assert!(!vlm.judge("q?", &screen(1), 0).await.unwrap().cached);
    // a new run (new Vlm) on the same screen asks nothing
    let vlm2 = Vlm::new(config(vec![s.base.clone()], Some(file.clone())), &SecretStore::default(), true).unwrap();
    let again = vlm2.judge("q?", &screen(1), 0).await.unwrap();
    assert!(again.cached && again.verdict == Some(Verdict::Yes));
    assert_eq!(s.chat_requests().len(), 1);
    // another screen, another question, or --no-cache: asked
    vlm2.judge("q?", &screen(2), 0).await.unwrap();
    vlm2.judge("other?", &screen(1), 0).await.unwrap();
    let nocache = Vlm::new(config(vec![s.base.clone()], Some(file)), &SecretStore::default(), false).unwrap();
    nocache.judge("q?", &screen(1), 0).await.unwrap();
    assert_eq!(s.chat_requests().len(), 4);
    assert_eq!(vlm2.spent().cache_hits, 1);
}

#[tokio::test]
async fn budgets_stop_spending() {
    let s = Server::start(&["judge-vl"], |_| Reply::text("yes")).await;
    let mut cfg = config(vec![s.base.clone()], None);
    cfg.budget = Budget { calls: Some(1), tokens: None, cost: None };
    let vlm = Vlm::new(cfg, &SecretStore::default(), false).unwrap();
    vlm.judge("q?", &screen(1), 0).await.unwrap();
    let e = vlm.judge("q?", &screen(2), 0).await.unwrap_err();
    assert!(matches!(e, VlmError::Budget(_)), "{e}");
    assert!(e.to_string().contains("call budget"), "{e}");
    assert_eq!(s.chat_requests().len(), 1);
}

#[tokio::test]
async fn preflight_checks_models_and_warms_up() {
    let s = Server::start(&["judge-vl", "locator"], |_| Reply::text("ready")).await;
    let vlm = Vlm::new(config(vec![s.base.clone()], None), &SecretStore::default(), false).unwrap();
    let p = vlm.preflight().await.unwrap();
    assert_eq!(p.endpoint, s.base);
    assert!(p.warmup_ms.is_some());
    assert_eq!(s.chat_requests().len(), 1);
    let missing = Server::start(&["judge-vl"], |_| Reply::text("ready")).await;
    let vlm = Vlm::new(config(vec![missing.base.clone()], None), &SecretStore::default(), false).unwrap();
    match vlm.preflight().await {
        Err(VlmError::ModelMissing { model, .. }) => assert_eq!(model, "locator"),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn the_api_key_is_sent_as_bearer_and_never_shown() {
    let s = Server::start(&["judge-vl"], |r| {
        if r.authorization.as_deref() == Some("Bearer sk-test-42") {
            Reply::text("yes")
        } else {
            Reply::Status { code: 401, retry_after: None }
        }
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("key"), "sk-test-42\n").unwrap();
    let mut cfg = config(vec![s.base.clone()], None);
    cfg.api_key = Some(SecretSource::File(dir.path().join("key")));
    let store = SecretStore::default();
    let red = store.redactor();
    let vlm = Vlm::new(cfg.clone(), &store, false).unwrap();
    assert_eq!(vlm.judge("q?", &screen(1), 0).await.unwrap().verdict, Some(Verdict::Yes));
    assert_eq!(red.redact("key sk-test-42"), "key ******");
    // a wrong key: an auth error that does not contain the key
    std::fs::write(dir.path().join("key"), "sk-wrong\n").unwrap();
    let vlm = Vlm::new(cfg, &SecretStore::default(), false).unwrap();
    let e = vlm.judge("q?", &screen(1), 0).await.unwrap_err().to_string();
    assert!(e.contains("refused the API key") && !e.contains("sk-wrong"), "{e}");
}

#[tokio::test]
async fn locate_reads_points_and_boxes_and_rejects_off_screen_answers() {
    let s = Server::start(&["judge-vl", "locator"], |r| {
        if r.prompt.contains("Password") {
            Reply::text("<|box_start|>(400,500),(600,600)<|box_end|>")
        } else {
            Reply::text("(1200, 50)")
        }
    })
    .await;
    let vlm = Vlm::new(config(vec![s.base.clone()], None), &SecretStore::default(), false).unwrap();
    let (loc, asked) = vlm.locate("the Password field", &screen(1)).await.unwrap();
    let loc = loc.unwrap();
    assert_eq!((loc.point.x, loc.point.y), (160, 110), "box centre on the 0-1000 grid of a 320x200 screen");
    assert_eq!(asked.model, "locator");
    let (loc, _) = vlm.locate("something", &screen(1)).await.unwrap();
    assert!(loc.is_err(), "{loc:?}");
}
