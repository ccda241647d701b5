//! Notifications (`notify:`) end to end: the real binary backs up into an `fs`
//! destination and notifies a recording HTTP server the test starts (Healthchecks
//! pings, webhooks, PagerDuty events); failing and hanging services only warn; no
//! secret reaches any output.

use crate::common::http::{Answer, HttpServer, Recorded, closed_url};
use crate::common::{LOCAL_POLICY_HEAD, Run, Sandbox};
use serde_json::Value;

/// Values of the secrets the policies below refer to: none may appear in any output.
const HC_PATH: &str = "/ping/hc-secret-0d338dcc";
const CHAT_PATH: &str = "/hooks/chat-secret-T000/B000";
const ROUTING_KEY: &str = "R0UTING-KEY-SECRET-42";

/// A policy backing up one config file (`app.env`, which the test may remove to make
/// the source fail), followed by `notify`.
fn policy(notify: &str) -> String {
    format!(
        "{LOCAL_POLICY_HEAD}  config:\n    type: config\n    paths:\n      - example-data/config/app.env\nnotify:\n{notify}"
    )
}

/// Healthchecks, a Slack webhook with a template, PagerDuty: all at `server`.
const ALL_THREE: &str = r#"  hc:
    type: healthchecks
    url: ${env:HC_URL}
  chat:
    type: webhook
    url: ${env:CHAT_URL}
    format: slack
    message: "{status} {policy}: {done} done, {failed} failed; failures: {failures}"
  pager:
    type: pagerduty
    routing_key: ${env:PD_KEY}
    url: ${env:PD_URL}
"#;

fn sandbox(notify: &str) -> Sandbox {
    let sandbox = Sandbox::with_policy(&policy(notify)).example_data();
    sandbox.run(&["init"]).check();
    sandbox
}

/// `backplan apply` with the notification secrets pointing at `server`.
fn apply<'a>(sandbox: &'a Sandbox, server: &HttpServer, args: &[&str]) -> crate::common::Cmd<'a> {
    let mut all = vec!["apply"];
    all.extend_from_slice(args);
    sandbox
        .run(&all)
        .env("HC_URL", &server.url(HC_PATH))
        .env("CHAT_URL", &server.url(CHAT_PATH))
        .env("PD_KEY", ROUTING_KEY)
        .env("PD_URL", &server.url("/v2/enqueue"))
}

fn host() -> String {
    gethostname::gethostname().to_string_lossy().into_owned()
}

/// No secret value, ping URL or webhook URL appears in either stream.
fn assert_no_secret(run: &Run) {
    for secret in [HC_PATH, CHAT_PATH, ROUTING_KEY, "hc-secret", "chat-secret"] {
        assert!(
            !run.all().contains(secret),
            "{secret} was printed:\n{}",
            run.all()
        );
    }
}

fn routes(requests: &[Recorded]) -> Vec<String> {
    requests
        .iter()
        .map(|r| format!("{} {}", r.method, r.route()))
        .collect()
}

#[test]
fn a_successful_apply_pings_start_and_success_posts_the_webhook_and_resolves_pagerduty() {
    let server = HttpServer::start();
    let sandbox = sandbox(ALL_THREE);
    let run = apply(&sandbox, &server, &[])
        .stdout("✓ backup config → local")
        .stdout("Notifications: 4 sent, 0 not sent.")
        .check();
    assert_no_secret(&run);

    let hc = server.to(HC_PATH);
    let starts = server.to(&format!("{HC_PATH}/start"));
    assert_eq!(starts.len(), 1, "{:?}", routes(&server.requests()));
    assert_eq!(hc.len(), 1, "{:?}", routes(&server.requests()));
    // The start came first, and both pings carry one run id.
    assert_eq!(server.requests()[0].route(), format!("{HC_PATH}/start"));
    let rid = starts[0].query("rid").expect("a run id");
    assert_eq!(hc[0].query("rid").as_deref(), Some(rid.as_str()));
    assert_eq!(hc[0].method, "POST");
    assert!(
        hc[0]
            .text()
            .contains("succeeded: 1 done, 0 failed, 0 skipped"),
        "{}",
        hc[0].text()
    );
    assert!(
        hc[0]
            .header("user-agent")
            .is_some_and(|a| a.starts_with("backplan/"))
    );

    // The webhook: not told of the start (its default states), the template filled in.
    let chat = server.to(CHAT_PATH);
    assert_eq!(chat.len(), 1);
    assert_eq!(chat[0].header("content-type"), Some("application/json"));
    assert_eq!(
        chat[0].json(),
        serde_json::json!({"text": "succeeded backplan: 1 done, 0 failed; failures: none"})
    );

    // PagerDuty: a success resolves the policy's alert on this host, if there is one.
    let pd = server.to("/v2/enqueue");
    assert_eq!(pd.len(), 1);
    assert_eq!(
        pd[0].json(),
        serde_json::json!({
            "routing_key": ROUTING_KEY,
            "event_action": "resolve",
            "dedup_key": format!("backplan/{}/backplan", host()),
        })
    );
}

#[test]
fn a_failed_source_pings_its_exit_status_and_triggers_pagerduty_then_a_success_resolves() {
    let server = HttpServer::start();
    let sandbox = sandbox(ALL_THREE);
    std::fs::remove_file(sandbox.path("example-data/config/app.env")).expect("remove");
    let run = apply(&sandbox, &server, &[]).status(3).check();
    assert_no_secret(&run);

    let fail = server.to(&format!("{HC_PATH}/3"));
    assert_eq!(fail.len(), 1, "{:?}", routes(&server.requests()));
    assert!(server.to(HC_PATH).is_empty(), "no success ping");
    assert!(
        fail[0].text().contains("failed (exit 3)"),
        "{}",
        fail[0].text()
    );

    let chat = server.to(CHAT_PATH);
    let text = chat[0].json()["text"].as_str().expect("text").to_string();
    assert_eq!(
        text,
        "failed backplan: 0 done, 1 failed; failures: backup config (BP227)"
    );

    let trigger = server.to("/v2/enqueue")[0].json();
    let dedup_key = format!("backplan/{}/backplan", host());
    assert_eq!(trigger["event_action"], "trigger");
    assert_eq!(trigger["routing_key"], ROUTING_KEY);
    assert_eq!(trigger["dedup_key"], dedup_key.as_str());
    assert_eq!(trigger["payload"]["severity"], "critical");
    assert_eq!(trigger["payload"]["source"], host().as_str());
    assert_eq!(trigger["payload"]["custom_details"]["exit_status"], 3);
    assert_eq!(
        trigger["payload"]["custom_details"]["failures"][0]["code"],
        "BP227"
    );
    let summary = trigger["payload"]["summary"].as_str().expect("summary");
    assert!(
        summary.starts_with("backplan backplan on ") && summary.contains("failed (exit 3)"),
        "{summary}"
    );

    // Fixed: the next run succeeds and resolves the same alert.
    sandbox.write("example-data/config/app.env", "APP_URL=https://x.invalid\n");
    apply(&sandbox, &server, &[]).check();
    let pd = server.to("/v2/enqueue");
    assert_eq!(pd.len(), 2);
    assert_eq!(pd[1].json()["event_action"], "resolve");
    assert_eq!(pd[1].json()["dedup_key"], dedup_key.as_str());
    assert_eq!(server.to(HC_PATH).len(), 1, "the success ping");
}

#[test]
fn the_states_filter_holds() {
    let server = HttpServer::start();
    let sandbox = sandbox(
        r#"  hc:
    type: healthchecks
    url: ${env:HC_URL}
    states: [success]
  chat:
    type: webhook
    url: ${env:CHAT_URL}
    states: [failure]
  pager:
    type: pagerduty
    routing_key: ${env:PD_KEY}
    url: ${env:PD_URL}
    states: [failure]
"#,
    );
    apply(&sandbox, &server, &[])
        .stdout("Notifications: 1 sent, 0 not sent.")
        .check();
    assert_eq!(
        routes(&server.requests()),
        [format!("POST {HC_PATH}")],
        "only the success ping: no start, no webhook, no resolve"
    );
}

#[test]
fn a_run_that_stops_with_an_error_pings_fail_with_exit_status_1() {
    let server = HttpServer::start();
    // No repository key: apply stops before any action (BP223).
    let text = policy(
        "  hc:\n    type: healthchecks\n    url: ${env:HC_URL}\n  hook:\n    type: webhook\n    url: ${env:CHAT_URL}\n",
    )
    .replace("  repository_key_file: repo.key\n", "");
    let sandbox = Sandbox::with_policy(&text).example_data();
    let run = apply(&sandbox, &server, &[])
        .status(1)
        .stderr("BP223")
        .check();
    assert_no_secret(&run);
    assert_eq!(server.to(&format!("{HC_PATH}/1")).len(), 1);
    let event = server.to(CHAT_PATH)[0].json();
    assert_eq!(event["state"], "failure");
    assert_eq!(event["exit_status"], 1);
    assert_eq!(event["error"]["code"], "BP223");
    assert!(event.get("counts").is_none(), "no action ran: {event}");
}

#[test]
fn a_source_secret_that_is_not_set_fails_the_run_and_is_notified() {
    let server = HttpServer::start();
    let text = format!(
        "{LOCAL_POLICY_HEAD}  db:\n    type: postgres\n    url: postgres://backup@127.0.0.1:1/app\n    password: ${{env:BACKPLAN_TEST_UNSET_PG}}\nnotify:\n  hook:\n    type: webhook\n    url: ${{env:CHAT_URL}}\n"
    );
    let sandbox = Sandbox::with_policy(&text);
    apply(&sandbox, &server, &[])
        .env_remove("BACKPLAN_TEST_UNSET_PG")
        .status(1)
        .stderr("BP130")
        .check();
    let event = server.to(CHAT_PATH)[0].json();
    assert_eq!(event["state"], "failure");
    assert_eq!(event["error"]["code"], "BP130");
    let message = event["error"]["message"].as_str().expect("message");
    assert!(message.contains("BACKPLAN_TEST_UNSET_PG"), "{message}");
}

#[test]
fn what_a_notification_carries_of_the_run_is_scrubbed_of_secret_values() {
    let server = HttpServer::start();
    // The server's address comes from the environment: the failure names it.
    let text = format!(
        "{LOCAL_POLICY_HEAD}  db:\n    type: postgres\n    url: postgres://backup@${{env:SECRET_DB_HOST}}:1/app\nnotify:\n  hook:\n    type: webhook\n    url: ${{env:CHAT_URL}}\n    send_log: true\n"
    );
    let sandbox = Sandbox::initialised(&text);
    let run = apply(&sandbox, &server, &[])
        .env("SECRET_DB_HOST", "127.0.0.1")
        .status(3)
        .check();
    assert!(
        run.stdout.contains("127.0.0.1"),
        "the report names the server"
    );
    let event = server.to(CHAT_PATH)[0].json();
    let message = event["failures"][0]["message"].as_str().expect("a failure");
    let log = event["log"].as_str().expect("a log");
    for text in [message, log] {
        assert!(!text.contains("127.0.0.1"), "{text}");
        assert!(text.contains("***"), "{text}");
    }
}

#[test]
fn the_json_webhook_carries_the_event_and_the_log_only_when_asked() {
    let server = HttpServer::start();
    let sandbox = sandbox(
        r#"  quiet:
    type: webhook
    url: ${env:CHAT_URL}
    states: [start, success]
  chatty:
    type: webhook
    url: ${env:HC_URL}
    send_log: true
"#,
    );
    apply(&sandbox, &server, &[]).check();
    let quiet = server.to(CHAT_PATH);
    assert_eq!(quiet.len(), 2);
    let (start, end) = (quiet[0].json(), quiet[1].json());
    assert_eq!(start["state"], "start");
    assert!(start.get("counts").is_none(), "{start}");
    assert_eq!(end["state"], "success");
    assert_eq!(end["format_version"], 1);
    assert_eq!(end["policy"], "backplan");
    assert_eq!(end["host"], host().as_str());
    assert_eq!(end["run_id"], start["run_id"]);
    assert_eq!(end["exit_status"], 0);
    assert_eq!(
        end["counts"],
        serde_json::json!({"done": 1, "failed": 0, "skipped": 0})
    );
    assert!(
        end["message"]
            .as_str()
            .is_some_and(|m| m.contains("succeeded: 1 done")),
        "{end}"
    );
    assert!(end.get("log").is_none(), "no log unless asked: {end}");
    let chatty = server.to(HC_PATH)[0].json();
    let log = chatty["log"].as_str().expect("the log was asked for");
    assert!(log.contains("✓ backup config → local"), "{log}");
}

#[test]
fn unreachable_failing_and_hanging_notifiers_only_warn_and_the_exit_code_stays() {
    let failing = HttpServer::answering(Answer::Status(500));
    let hanging = HttpServer::answering(Answer::Hang);
    let closed = closed_url("/ping/closed-secret-port");
    let sandbox = sandbox(
        r#"  gone:
    type: healthchecks
    url: ${env:CLOSED_URL}
  broken:
    type: healthchecks
    url: ${env:FAILING_URL}
  slow:
    type: webhook
    url: ${env:HANGING_URL}
    timeout: 1s
"#,
    );
    let started = std::time::Instant::now();
    let run = sandbox
        .run(&["apply", "--format", "json"])
        .env("CLOSED_URL", &closed)
        .env("FAILING_URL", &failing.url("/ping/failing-secret"))
        .env("HANGING_URL", &hanging.url("/hook/hanging-secret"))
        .stderr("BP265")
        .check();
    assert!(
        started.elapsed() < std::time::Duration::from_secs(20),
        "the timeouts bound the wait: {:?}",
        started.elapsed()
    );
    for secret in [
        "closed-secret",
        "failing-secret",
        "hanging-secret",
        "127.0.0.1",
    ] {
        assert!(
            !run.all().contains(secret),
            "{secret} printed:\n{}",
            run.all()
        );
    }
    let report: Value = serde_json::from_str(&run.stdout).expect("JSON report");
    assert_eq!(
        report["outcomes"][0]["status"], "done",
        "the backup is whole"
    );
    let notifications = report["notifications"].as_array().expect("notifications");
    // Start and success of both pings, the success of the webhook: all failed.
    assert_eq!(notifications.len(), 5, "{report}");
    for n in notifications {
        assert_eq!(n["error"]["code"], "BP265", "{n}");
    }
    let why = |name: &str| -> Vec<String> {
        notifications
            .iter()
            .filter(|n| n["notifier"] == name)
            .map(|n| {
                n["error"]["message"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string()
            })
            .collect()
    };
    assert!(why("gone")[0].contains("refused"), "{:?}", why("gone"));
    assert!(why("broken")[0].contains("HTTP 500"), "{:?}", why("broken"));
    assert!(
        why("slow")[0].contains("no answer within 1s"),
        "{:?}",
        why("slow")
    );
    // A 500 is tried twice (start and success: four requests).
    assert_eq!(failing.requests().len(), 4);
    assert_eq!(hanging.wait_for(1).len(), 1);
}

#[test]
fn an_unset_reference_warns_and_the_backup_still_runs() {
    let sandbox =
        sandbox("  hc:\n    type: healthchecks\n    url: ${env:BACKPLAN_TEST_UNSET_HC}\n");
    sandbox
        .run(&["apply"])
        .env_remove("BACKPLAN_TEST_UNSET_HC")
        .stderr("BP137")
        .stderr("BP266")
        .stdout("✓ backup config → local")
        .stdout("Notifications: 0 sent, 2 not sent.")
        .check();
}
