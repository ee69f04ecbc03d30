//! Event publishing (SPEC 8) over real sockets: messages sent over SMTP and the API, records
//! received by a real HTTP server (SNS notifications, EventBridge events) and read from
//! JSON-lines files (Firehose, destinations without a mapping), CloudWatch counters on
//! `/metrics`, the mailbox simulator, and endpoints that are down. Every record goes
//! through the one validator of `common::events`.

mod common;

use std::time::{Duration, Instant};

use base64::Engine as _;
use common::aws::Cli;
use common::events::{
    ALL_TYPES, Answer, EventsRelay, Receiver, add_destination, destination, read_lines, sns, types,
    validate_eventbridge, validate_record, validate_sns, wait_for_lines,
};
use common::{Capture, Client, Script, standard_config};
use serde_json::{Value, json};
use sesrelay::events::{CloudWatchDimension, DestinationTarget, DimensionValueSource};

const TOPIC: &str = "arn:aws:sns:us-east-1:000000000000:ses-events";

/// The id in `250 2.0.0 Ok <id>`.
fn id_of(reply: &str) -> String {
    reply
        .strip_prefix("250 2.0.0 Ok ")
        .unwrap_or_else(|| panic!("not accepted: {reply}"))
        .to_owned()
}

/// A message over SMTP: Send and Delivery notifications whose records match SES's, field
/// by field.
#[tokio::test]
async fn a_message_over_smtp_gets_sns_send_and_delivery_records_as_ses_writes_them() {
    let upstream = Capture::start(Script::default()).await;
    let receiver = Receiver::start(Answer::Status(200)).await;
    let url = receiver.url("/ses");
    let relay = EventsRelay::start(&standard_config(&upstream.url()), |config, _| {
        config.events.account_id = "123456789012".into();
        config.events.sns.insert(TOPIC.into(), vec![url.clone()]);
        add_destination(
            config,
            "marketing",
            "to-app",
            destination(&ALL_TYPES, sns(TOPIC)),
        );
    })
    .await;

    let content = b"From: Joe Bloggs <joe@example.com>\r\nTo: Bob <bob@example.net>\r\n\
Cc: carol@example.net\r\nSubject: =?UTF-8?Q?Hi_Bob?=\r\nDate: Thu, 26 Nov 2026 13:29:38 +0000\r\n\
X-SES-MESSAGE-TAGS: campaign=spring\r\n\r\nHello Bob\r\n";
    let mut c = Client::ready(relay.smtp).await;
    let reply = c
        .mail(
            "joe@example.com",
            &["bob@example.net", "carol@example.net"],
            content,
        )
        .await;
    let id = id_of(&reply);
    let requests = receiver.wait_for(2).await;
    assert_eq!(requests.len(), 2);
    assert!(requests.iter().all(|r| r.path == "/ses"));
    let send = validate_sns(&requests[0], TOPIC);
    let delivery = validate_sns(&requests[1], TOPIC);
    assert_eq!(
        types(&[send.clone(), delivery.clone()]),
        ["Send", "Delivery"]
    );
    assert_eq!(send["send"], json!({}));

    let mail = &send["mail"];
    assert_eq!(mail["source"], "joe@example.com");
    assert_eq!(
        mail["sourceArn"],
        "arn:aws:ses:us-east-1:123456789012:identity/joe@example.com"
    );
    assert_eq!(mail["sendingAccountId"], "123456789012");
    assert_eq!(mail["messageId"], id.as_str());
    assert_eq!(
        mail["destination"],
        json!(["bob@example.net", "carol@example.net"])
    );
    assert_eq!(mail["headersTruncated"], false);
    assert_eq!(
        mail["headers"],
        json!([
            {"name": "From", "value": "Joe Bloggs <joe@example.com>"},
            {"name": "To", "value": "Bob <bob@example.net>"},
            {"name": "Cc", "value": "carol@example.net"},
            {"name": "Subject", "value": "=?UTF-8?Q?Hi_Bob?="},
            {"name": "Date", "value": "Thu, 26 Nov 2026 13:29:38 +0000"},
            {"name": "X-SES-MESSAGE-TAGS", "value": "campaign=spring"},
        ])
    );
    assert_eq!(
        mail["commonHeaders"],
        json!({
            "from": ["Joe Bloggs <joe@example.com>"],
            "to": ["Bob <bob@example.net>"],
            "cc": ["carol@example.net"],
            "date": "Thu, 26 Nov 2026 13:29:38 +0000",
            "messageId": id,
            "subject": "Hi Bob",
        })
    );
    assert_eq!(
        mail["tags"],
        json!({
            "ses:operation": ["SendSmtpEmail"],
            "ses:configuration-set": ["marketing"],
            "ses:source-ip": ["127.0.0.1"],
            "ses:from-domain": ["example.com"],
            "campaign": ["spring"],
            "team": ["growth"],
        })
    );
    // The Delivery record has the same mail, with ses:outgoing-ip.
    let mut delivered_mail = mail.clone();
    delivered_mail["tags"]["ses:outgoing-ip"] = json!(["127.0.0.1"]);
    assert_eq!(delivery["mail"], delivered_mail);
    let d = &delivery["delivery"];
    assert_eq!(
        d["recipients"],
        json!(["bob@example.net", "carol@example.net"])
    );
    assert_eq!(d["smtpResponse"], "250 2.0.0 queued as CAPTURE");
    assert_eq!(d["reportingMTA"], "sesrelay.local");
    // The two notifications are two SNS messages.
    assert_ne!(
        requests[0].header("x-amz-sns-message-id"),
        requests[1].header("x-amz-sns-message-id")
    );
    relay.stop().await;
}

/// The AUTH user is `ses:caller-identity`; the envelope sender `<>` makes the From address
/// the source.
#[tokio::test]
async fn the_auth_user_is_the_caller_identity() {
    const HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$ZZy8ycXBpjzW3l85dieeVw$vK1SwTgfDspKgKcxMzy82TwfDbBKwxY4Ma6WI/yoBY8";
    let upstream = Capture::start(Script::default()).await;
    let config =
        standard_config(&upstream.url()).replacen(
            "[server]\n",
            "[server]\ntrusted_networks = [\"10.0.0.0/8\"]\n",
            1,
        ) + &format!("\n[auth]\nusers = [{{ username = \"app\", password_hash = \"{HASH}\" }}]\n");
    let relay = EventsRelay::start(&config, |config, _| {
        add_destination(
            config,
            "marketing",
            "all",
            destination(&["SEND"], sns(TOPIC)),
        );
    })
    .await;
    let mut c = Client::ready(relay.smtp).await;
    let plain = base64::engine::general_purpose::STANDARD.encode("\0app\0example-password");
    assert!(
        c.cmd(&format!("AUTH PLAIN {plain}"))
            .await
            .starts_with("235")
    );
    let reply = c
        .mail(
            "",
            &["bob@example.net"],
            b"From: joe@example.com\r\nSubject: x\r\n\r\nbody\r\n",
        )
        .await;
    let id = id_of(&reply);
    // No [events] mapping: the unmapped destination's file.
    let path = relay.events_dir().join("marketing/all.jsonl");
    let records = wait_for_lines(&path, 1).await;
    assert_eq!(types(&records), ["Send"]);
    let mail = &records[0]["mail"];
    assert_eq!(mail["messageId"], id.as_str());
    assert_eq!(mail["source"], "joe@example.com");
    assert_eq!(mail["tags"]["ses:caller-identity"], json!(["app"]));
    relay.stop().await;
}

/// MatchingEventTypes and Enabled filter; a message without a set, and a rejected one,
/// publish nothing.
#[tokio::test]
async fn matching_event_types_and_enabled_choose_what_each_destination_gets() {
    let upstream = Capture::start(Script::default()).await;
    let deliveries = Receiver::start(Answer::Status(200)).await;
    let sends = Receiver::start(Answer::Status(204)).await;
    let off = Receiver::start(Answer::Status(200)).await;
    let topics = [
        "arn:aws:sns:us-east-1:000000000000:deliveries",
        "arn:aws:sns:us-east-1:000000000000:sends",
        "arn:aws:sns:us-east-1:000000000000:off",
    ];
    let urls = [deliveries.url("/"), sends.url("/"), off.url("/")];
    let relay = EventsRelay::start(&standard_config(&upstream.url()), |config, _| {
        for (topic, url) in topics.iter().zip(&urls) {
            config.events.sns.insert((*topic).into(), vec![url.clone()]);
        }
        add_destination(
            config,
            "marketing",
            "d",
            destination(&["DELIVERY"], sns(topics[0])),
        );
        add_destination(
            config,
            "marketing",
            "s",
            destination(&["SEND"], sns(topics[1])),
        );
        let mut disabled = destination(&ALL_TYPES, sns(topics[2]));
        disabled.enabled = false;
        add_destination(config, "marketing", "o", disabled);
    })
    .await;

    let mut c = Client::ready(relay.smtp).await;
    // The set transactional has no destinations.
    let r = c
        .mail(
            "ann@example.com",
            &["bob@example.net"],
            b"From: ann@example.com\r\n\r\nx\r\n",
        )
        .await;
    id_of(&r);
    // A policy rejection of a message naming marketing.
    let r = c
        .mail(
            "eve@unverified.test",
            &["bob@example.net"],
            b"From: eve@unverified.test\r\nX-SES-CONFIGURATION-SET: marketing\r\n\r\nx\r\n",
        )
        .await;
    assert!(r.starts_with("554 5.7.1"), "{r}");
    let r = c
        .mail(
            "joe@example.com",
            &["bob@example.net"],
            b"From: joe@example.com\r\n\r\nx\r\n",
        )
        .await;
    let id = id_of(&r);

    // Each endpoint's records come in order: the earlier messages would be first.
    let got = deliveries.wait_for(1).await;
    let record = validate_sns(&got[0], topics[0]);
    assert_eq!(record["eventType"], "Delivery");
    assert_eq!(record["mail"]["messageId"], id.as_str());
    let got = sends.wait_for(1).await;
    let record = validate_sns(&got[0], topics[1]);
    assert_eq!(record["eventType"], "Send");
    assert_eq!(record["mail"]["messageId"], id.as_str());
    relay
        .wait_for_metric("sesrelay_events_published_total{sink=\"sns\"}", 2.0)
        .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(deliveries.requests().len(), 1);
    assert_eq!(sends.requests().len(), 1);
    assert!(off.requests().is_empty(), "{:?}", off.requests());
    assert_eq!(
        relay.metrics().await["sesrelay_events_published_total{sink=\"sns\"}"],
        2.0
    );
    // Nothing for the set without destinations, anywhere.
    assert!(!relay.events_dir().exists());
    relay.stop().await;
}

/// Each simulator address, alone and beside a real recipient: never forwarded, the events
/// of its name.
#[tokio::test]
async fn mailbox_simulator_addresses_produce_the_events_of_their_names() {
    let upstream = Capture::start(Script::default()).await;
    let relay = EventsRelay::start(&standard_config(&upstream.url()), |config, _| {
        add_destination(
            config,
            "marketing",
            "sim",
            destination(&ALL_TYPES, sns(TOPIC)),
        );
    })
    .await;
    let path = relay.events_dir().join("marketing/sim.jsonl");
    let simulator = [
        "success@simulator.amazonses.com",
        "bounce@simulator.amazonses.com",
        "ooto@simulator.amazonses.com",
        "complaint+run-1@simulator.amazonses.com",
        "suppressionlist@simulator.amazonses.com",
    ];
    let mut c = Client::ready(relay.smtp).await;
    let reply = c
        .mail(
            "joe@example.com",
            &simulator,
            b"From: joe@example.com\r\nSubject: simulated\r\n\r\nx\r\n",
        )
        .await;
    let id = id_of(&reply);
    let records = wait_for_lines(&path, 5).await;
    assert_eq!(
        types(&records),
        ["Send", "Delivery", "Bounce", "Bounce", "Complaint"]
    );
    for record in &records {
        assert_eq!(record["mail"]["messageId"], id.as_str());
        assert_eq!(record["mail"]["destination"], json!(simulator));
    }
    assert_eq!(
        records[1]["delivery"]["recipients"],
        json!([simulator[0], simulator[2], simulator[3]])
    );
    assert_eq!(
        records[1]["delivery"]["smtpResponse"],
        "250 2.6.0 Message received"
    );
    assert_eq!(records[2]["bounce"]["bounceType"], "Permanent");
    assert_eq!(records[2]["bounce"]["bounceSubType"], "General");
    assert_eq!(
        records[2]["bounce"]["bouncedRecipients"],
        json!([{"emailAddress": simulator[1], "action": "failed", "status": "5.1.1",
                "diagnosticCode": "smtp; 550 5.1.1 user unknown"}])
    );
    assert_eq!(
        records[3]["bounce"]["bounceSubType"],
        "OnAccountSuppressionList"
    );
    assert_eq!(
        records[3]["bounce"]["bouncedRecipients"][0]["emailAddress"],
        simulator[4]
    );
    assert_eq!(
        records[4]["complaint"]["complainedRecipients"],
        json!([{"emailAddress": simulator[3]}])
    );
    assert_eq!(records[4]["complaint"]["complaintFeedbackType"], "abuse");
    // Never forwarded: the upstream saw no connection at all.
    assert_eq!(upstream.connections(), 0);

    // Beside a real recipient: the upstream gets the real one only.
    let reply = c
        .mail(
            "joe@example.com",
            &["bob@example.net", "success@simulator.amazonses.com"],
            b"From: joe@example.com\r\n\r\nx\r\n",
        )
        .await;
    let id = id_of(&reply);
    let forwarded = upstream.wait_for(1).await;
    assert_eq!(forwarded[0].rcpt_to, ["bob@example.net"]);
    let records = wait_for_lines(&path, 8).await;
    let records = &records[5..];
    assert_eq!(types(records), ["Send", "Delivery", "Delivery"]);
    assert!(
        records
            .iter()
            .all(|r| r["mail"]["messageId"] == id.as_str())
    );
    assert_eq!(
        records[0]["mail"]["destination"],
        json!(["bob@example.net", "success@simulator.amazonses.com"])
    );
    assert_eq!(
        records[1]["delivery"]["recipients"],
        json!(["bob@example.net"])
    );
    assert_eq!(
        records[1]["delivery"]["smtpResponse"],
        "250 2.0.0 queued as CAPTURE"
    );
    assert_eq!(
        records[2]["delivery"]["recipients"],
        json!(["success@simulator.amazonses.com"])
    );

    // A set without destinations: still never forwarded, still 250, no events.
    let reply = c
        .mail(
            "ann@example.com",
            &["bounce@simulator.amazonses.com"],
            b"From: ann@example.com\r\n\r\nx\r\n",
        )
        .await;
    id_of(&reply);
    assert_eq!(upstream.messages().len(), 1);
    assert!(!relay.events_dir().join("transactional").exists());
    relay.stop().await;
}

/// EventBridge endpoints get EventBridge events, a Firehose directory JSON lines, and an
/// SNS topic without a mapping `events.dir/<set>/<destination>.jsonl`.
#[tokio::test]
async fn eventbridge_firehose_and_unmapped_destinations() {
    let upstream = Capture::start(Script::default()).await;
    let bus = Receiver::start(Answer::Status(200)).await;
    let bus_arn = "arn:aws:events:us-east-1:000000000000:event-bus/default";
    let stream_arn = "arn:aws:firehose:us-east-1:000000000000:deliverystream/ses-stream";
    let bus_url = bus.url("/events");
    let relay = EventsRelay::start(&standard_config(&upstream.url()), |config, dir| {
        config
            .events
            .eventbridge
            .insert(bus_arn.into(), vec![bus_url.clone()]);
        config
            .events
            .firehose
            .insert(stream_arn.into(), dir.join("firehose"));
        add_destination(
            config,
            "marketing",
            "bus",
            destination(
                &ALL_TYPES,
                DestinationTarget::EventBridge {
                    event_bus_arn: bus_arn.into(),
                },
            ),
        );
        add_destination(
            config,
            "marketing",
            "stream",
            destination(
                &ALL_TYPES,
                DestinationTarget::Firehose {
                    delivery_stream_arn: stream_arn.into(),
                    iam_role_arn: "arn:aws:iam::000000000000:role/firehose".into(),
                },
            ),
        );
        add_destination(
            config,
            "marketing",
            "unmapped",
            destination(
                &ALL_TYPES,
                sns("arn:aws:sns:us-east-1:000000000000:nowhere"),
            ),
        );
    })
    .await;
    let mut c = Client::ready(relay.smtp).await;
    let reply = c
        .mail(
            "joe@example.com",
            &["bob@example.net"],
            b"From: joe@example.com\r\n\r\nx\r\n",
        )
        .await;
    let id = id_of(&reply);

    let events = bus.wait_for(2).await;
    let records: Vec<Value> = events
        .iter()
        .map(|e| validate_eventbridge(e, "000000000000", "marketing"))
        .collect();
    assert_eq!(types(&records), ["Send", "Delivery"]);
    let event: Value = serde_json::from_str(&events[1].body).unwrap();
    assert_eq!(event["detail-type"], "Email Delivered");
    assert_eq!(event["region"], "us-east-1");
    assert_eq!(
        events[0].header("content-type"),
        Some("application/json; charset=utf-8")
    );

    let firehose = relay.dir.path().join("firehose/ses-stream.jsonl");
    let unmapped = relay.events_dir().join("marketing/unmapped.jsonl");
    for path in [&firehose, &unmapped] {
        let lines = wait_for_lines(path, 2).await;
        assert_eq!(types(&lines), ["Send", "Delivery"], "{}", path.display());
        assert!(lines.iter().all(|r| r["mail"]["messageId"] == id.as_str()));
        // The same records as the bus's.
        assert_eq!(lines[0], records[0]);
    }
    relay
        .wait_for_metric("sesrelay_events_published_total{sink=\"firehose\"}", 2.0)
        .await;
    relay
        .wait_for_metric("sesrelay_events_published_total{sink=\"file\"}", 2.0)
        .await;
    relay
        .wait_for_metric("sesrelay_events_published_total{sink=\"eventbridge\"}", 2.0)
        .await;
    relay.stop().await;
}

/// An endpoint that never answers, one that refuses connections and one that answers 500
/// for a while: the 250 comes at once; the records are retried (counted), the flaky
/// endpoint gets them all in order, the refused one's are dropped (counted).
#[tokio::test]
async fn endpoints_that_are_down_never_delay_mail_and_retries_are_counted() {
    let upstream = Capture::start(Script::default()).await;
    let hanging = Receiver::start(Answer::Hang).await;
    let flaky = Receiver::start(Answer::Status(500)).await;
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap()
    };
    let topics = [
        "arn:aws:sns:us-east-1:000000000000:hanging",
        "arn:aws:sns:us-east-1:000000000000:closed",
        "arn:aws:sns:us-east-1:000000000000:flaky",
    ];
    let urls = [
        hanging.url("/"),
        format!("http://{closed}/"),
        flaky.url("/"),
    ];
    let relay = EventsRelay::start(&standard_config(&upstream.url()), |config, _| {
        for (i, (topic, url)) in topics.iter().zip(&urls).enumerate() {
            config.events.sns.insert((*topic).into(), vec![url.clone()]);
            add_destination(
                config,
                "marketing",
                &format!("d{i}"),
                destination(&ALL_TYPES, sns(topic)),
            );
        }
    })
    .await;

    let mut c = Client::ready(relay.smtp).await;
    let mut ids = Vec::new();
    for _ in 0..2 {
        let started = Instant::now();
        // Well under one attempt's timeout (5 s): a mail path that waited for the hanging
        // endpoint even once would miss it.
        let reply = tokio::time::timeout(
            Duration::from_secs(4),
            c.mail(
                "joe@example.com",
                &["bob@example.net"],
                b"From: joe@example.com\r\n\r\nx\r\n",
            ),
        )
        .await
        .expect("the 250 does not wait for the endpoints");
        ids.push(id_of(&reply));
        assert!(started.elapsed() < Duration::from_secs(4));
    }
    upstream.wait_for(2).await;
    hanging.wait_for_any(1).await;
    // The flaky endpoint is asked again after its 500s, then takes everything, in order.
    flaky.wait_for_any(3).await;
    assert!(flaky.accepted().is_empty());
    relay
        .wait_for_metric("sesrelay_events_retried_total{sink=\"sns\"}", 3.0)
        .await;
    flaky.set_answer(Answer::Status(200));
    let got = flaky.wait_for(4).await;
    let records: Vec<Value> = got.iter().map(|r| validate_sns(r, topics[2])).collect();
    assert_eq!(types(&records), ["Send", "Delivery", "Send", "Delivery"]);
    assert_eq!(records[0]["mail"]["messageId"], ids[0].as_str());
    assert_eq!(records[2]["mail"]["messageId"], ids[1].as_str());
    // The closed endpoint's retries run out (some 8 s): its records are dropped.
    relay
        .wait_for_metric("sesrelay_events_dropped_total{sink=\"sns\"}", 1.0)
        .await;
    relay.stop().await;
}

/// A CloudWatch destination counts its events on /metrics, one label per dimension, its
/// value from the message tag or header, else the default.
#[tokio::test]
async fn cloudwatch_destinations_count_events_on_metrics() {
    let upstream = Capture::start(Script::default()).await;
    let dimension = |name: &str, source, default: &str| CloudWatchDimension {
        name: name.into(),
        value_source: source,
        default_value: default.into(),
    };
    let relay = EventsRelay::start(&standard_config(&upstream.url()), |config, _| {
        add_destination(
            config,
            "marketing",
            "cw",
            destination(
                &["SEND", "DELIVERY"],
                DestinationTarget::CloudWatch {
                    dimensions: vec![
                        dimension(
                            "ses:configuration-set",
                            DimensionValueSource::MessageTag,
                            "none",
                        ),
                        dimension("campaign", DimensionValueSource::MessageTag, "no-campaign"),
                        dimension("X-Mailer", DimensionValueSource::EmailHeader, "unknown"),
                    ],
                },
            ),
        );
    })
    .await;
    let mut c = Client::ready(relay.smtp).await;
    for content in [
        &b"From: joe@example.com\r\nX-SES-MESSAGE-TAGS: campaign=spring\r\nX-Mailer: app 1.0\r\n\r\nx\r\n"[..],
        b"From: joe@example.com\r\n\r\nx\r\n",
        b"From: joe@example.com\r\n\r\nx\r\n",
    ] {
        id_of(&c.mail("joe@example.com", &["bob@example.net"], content).await);
    }
    let metrics = relay.metrics().await;
    let series = |event: &str, campaign: &str, mailer: &str| {
        format!(
            "sesrelay_cloudwatch_events_total{{configuration_set=\"marketing\",destination=\"cw\",event_type=\"{event}\",ses_configuration_set=\"marketing\",campaign=\"{campaign}\",X_Mailer=\"{mailer}\"}}"
        )
    };
    for (event, campaign, mailer, count) in [
        ("Send", "spring", "app 1.0", 1.0),
        ("Delivery", "spring", "app 1.0", 1.0),
        ("Send", "no-campaign", "unknown", 2.0),
        ("Delivery", "no-campaign", "unknown", 2.0),
    ] {
        let key = series(event, campaign, mailer);
        assert_eq!(metrics.get(&key), Some(&count), "{key} in {metrics:#?}");
    }
    assert_eq!(
        metrics.get("sesrelay_events_published_total{sink=\"cloudwatch\"}"),
        Some(&6.0)
    );
    // The family is served now, and the README's metrics table lists it.
    let page = reqwest::get(format!("http://{}/metrics", relay.admin))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains("\n# TYPE sesrelay_cloudwatch_events_total counter\n"));
    let readme = std::fs::read_to_string("README.md").unwrap();
    assert!(readme.contains("\n| `sesrelay_cloudwatch_events_total` | counter | "));
    // Nothing written for a CloudWatch destination.
    assert!(!relay.events_dir().exists());
    relay.stop().await;
}

/// The API's send-email: `ses:operation` SendEmail for Simple content, SendRawEmail for
/// Raw; messageId is the API's MessageId.
#[tokio::test]
async fn api_sends_get_records_naming_their_operation() {
    let upstream = Capture::start(Script::default()).await;
    let relay = EventsRelay::start(&standard_config(&upstream.url()), |config, _| {
        add_destination(
            config,
            "marketing",
            "api",
            destination(&["SEND"], sns(TOPIC)),
        );
    })
    .await;
    let client = reqwest::Client::new();
    let send = |body: Value| {
        let request = client
            .post(format!("http://{}/v2/email/outbound-emails", relay.admin))
            .json(&body);
        async move {
            let answer = request.send().await.unwrap();
            assert_eq!(answer.status(), 200);
            let answer: Value = serde_json::from_str(&answer.text().await.unwrap()).unwrap();
            answer["MessageId"].as_str().unwrap().to_owned()
        }
    };
    let simple = send(json!({
        "FromEmailAddress": "joe@example.com",
        "Destination": {"ToAddresses": ["bob@example.net"]},
        "Content": {"Simple": {"Subject": {"Data": "Hello"}, "Body": {"Text": {"Data": "Hi"}}}},
    }))
    .await;
    let raw = base64::engine::general_purpose::STANDARD
        .encode("From: joe@example.com\r\nTo: bob@example.net\r\nSubject: raw\r\n\r\nbody\r\n");
    let raw = send(json!({"Content": {"Raw": {"Data": raw}}})).await;
    let path = relay.events_dir().join("marketing/api.jsonl");
    let records = wait_for_lines(&path, 2).await;
    let by_id = |id: &str| {
        records
            .iter()
            .find(|r| r["mail"]["messageId"] == id)
            .unwrap_or_else(|| panic!("no record of {id}: {records:?}"))
    };
    let simple = by_id(&simple);
    assert_eq!(
        simple["mail"]["tags"]["ses:operation"],
        json!(["SendEmail"])
    );
    assert_eq!(simple["mail"]["commonHeaders"]["subject"], "Hello");
    let raw = by_id(&raw);
    assert_eq!(
        raw["mail"]["tags"]["ses:operation"],
        json!(["SendRawEmail"])
    );
    assert_eq!(raw["mail"]["tags"]["ses:source-ip"], json!(["127.0.0.1"]));
    assert_eq!(raw["mail"]["commonHeaders"]["subject"], "raw");
    relay.stop().await;
}

/// The upstream's permanent refusal: Send and Bounce with its reply; a temporary one
/// publishes nothing (the client sends again).
#[tokio::test]
async fn upstream_refusals_bounce_when_permanent_and_publish_nothing_when_temporary() {
    let mut script = Script::default();
    script.rcpt.insert(
        "gone@example.net".into(),
        "550 5.1.1 <gone@example.net>: no such user".into(),
    );
    script
        .rcpt
        .insert("later@example.net".into(), "451 4.3.0 try later".into());
    let upstream = Capture::start(script).await;
    let relay = EventsRelay::start(&standard_config(&upstream.url()), |config, _| {
        add_destination(
            config,
            "marketing",
            "all",
            destination(&ALL_TYPES, sns(TOPIC)),
        );
    })
    .await;
    let path = relay.events_dir().join("marketing/all.jsonl");
    let mut c = Client::ready(relay.smtp).await;
    let content = b"From: joe@example.com\r\n\r\nx\r\n";
    let temporary = c
        .mail("joe@example.com", &["later@example.net"], content)
        .await;
    assert!(temporary.starts_with("451"), "{temporary}");
    let permanent = c
        .mail("joe@example.com", &["gone@example.net"], content)
        .await;
    assert!(permanent.starts_with("550 5.1.1"), "{permanent}");
    let ok = c
        .mail("joe@example.com", &["bob@example.net"], content)
        .await;
    let id = id_of(&ok);
    let records = wait_for_lines(&path, 4).await;
    assert_eq!(types(&records), ["Send", "Bounce", "Send", "Delivery"]);
    assert_eq!(
        records[0]["mail"]["messageId"],
        records[1]["mail"]["messageId"]
    );
    assert_eq!(
        records[1]["bounce"]["bouncedRecipients"],
        json!([{"emailAddress": "gone@example.net", "action": "failed", "status": "5.1.1",
                "diagnosticCode": "smtp; 550 5.1.1 <gone@example.net>: no such user"}])
    );
    assert_eq!(records[1]["bounce"]["bounceSubType"], "General");
    assert_eq!(records[1]["bounce"]["reportingMTA"], "dsn; sesrelay.local");
    assert_eq!(records[3]["mail"]["messageId"], id.as_str());
    // Nothing comes late (the temporary failure's records would have come first anyway:
    // one file, one worker, in order).
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(read_lines(&path).len(), 4);
    relay.stop().await;
}

/// The validator is strict: a record missing a field, with a field of the wrong type or
/// format, or with a field SES does not write, fails it.
#[test]
fn the_validator_refuses_what_ses_would_not_write() {
    let good = json!({
        "eventType": "Send",
        "mail": {
            "timestamp": "2026-11-26T13:29:38.000Z", "source": "joe@example.com",
            "sourceArn": "arn:aws:ses:us-east-1:123456789012:identity/joe@example.com",
            "sendingAccountId": "123456789012",
            "messageId": "0100018c3a4b5c6d-5f1e2d3c-4b5a-4697-8877-665544332211-000000",
            "destination": ["bob@example.net"], "headersTruncated": false,
            "headers": [{"name": "From", "value": "joe@example.com"}],
            "commonHeaders": {"from": ["joe@example.com"], "date": "x",
                              "messageId": "0100018c3a4b5c6d-5f1e2d3c-4b5a-4697-8877-665544332211-000000"},
            "tags": {"ses:operation": ["SendRawEmail"], "ses:configuration-set": ["marketing"],
                     "ses:source-ip": ["127.0.0.1"], "ses:from-domain": ["example.com"]}},
        "send": {}
    });
    validate_record(&good);
    let broken: [fn(&mut Value); 8] = [
        |v| v["mail"]["timestamp"] = json!("2026-11-26 13:29:38"),
        |v| {
            v["mail"].as_object_mut().unwrap().remove("headers");
        },
        |v| v["mail"]["messageId"] = json!("abc"),
        |v| v["mail"]["tags"]["team"] = json!("growth"),
        |v| v["send"] = json!({"x": 1}),
        |v| v["mail"]["extra"] = json!(1),
        |v| v["mail"]["tags"]["ses:outgoing-ip"] = json!(["127.0.0.1"]),
        |v| v["eventType"] = json!("Delivery"),
    ];
    for (i, breaks) in broken.into_iter().enumerate() {
        let mut bad = good.clone();
        breaks(&mut bad);
        let refused = std::panic::catch_unwind(|| validate_record(&bad)).is_err();
        assert!(refused, "broken record {i} passed: {bad}");
    }
}

/// The suppression list on the mail path: a suppressed recipient is dropped from the
/// upstream's envelope and gets Send + Bounce (Permanent, OnAccountSuppressionList) while
/// the message gets its 250; a simulated bounce or complaint puts the address on the list
/// (the account's reasons include both by default).
#[tokio::test]
async fn suppressed_recipients_bounce_and_simulated_bounces_are_suppressed() {
    let upstream = Capture::start(Script::default()).await;
    let relay = EventsRelay::start(&standard_config(&upstream.url()), |config, _| {
        add_destination(
            config,
            "marketing",
            "all",
            destination(&ALL_TYPES, sns(TOPIC)),
        );
    })
    .await;
    let api = format!("http://{}/v2/email/suppression/addresses", relay.admin);
    let http = reqwest::Client::new();
    let put = http
        .put(&api)
        .json(&json!({ "EmailAddress": "Gone@Example.net", "Reason": "BOUNCE" }))
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), 200);

    let path = relay.events_dir().join("marketing/all.jsonl");
    let mut c = Client::ready(relay.smtp).await;
    let message = b"From: joe@example.com\r\nSubject: s\r\n\r\nx\r\n";
    let reply = c
        .mail(
            "joe@example.com",
            &["gone@example.net", "here@example.net"],
            message,
        )
        .await;
    let id = id_of(&reply);
    let forwarded = upstream.wait_for(1).await;
    assert_eq!(forwarded[0].rcpt_to, ["here@example.net"]);
    let records = wait_for_lines(&path, 3).await;
    for record in &records {
        validate_record(record);
        assert_eq!(record["mail"]["messageId"], id.as_str());
    }
    assert_eq!(types(&records), ["Send", "Delivery", "Bounce"]);
    assert_eq!(
        records[1]["delivery"]["recipients"],
        json!(["here@example.net"])
    );
    assert_eq!(records[2]["bounce"]["bounceType"], "Permanent");
    assert_eq!(
        records[2]["bounce"]["bounceSubType"],
        "OnAccountSuppressionList"
    );
    assert_eq!(
        records[2]["bounce"]["bouncedRecipients"][0]["emailAddress"],
        "gone@example.net"
    );

    // Only suppressed recipients: 250, and the upstream is not contacted.
    let reply = c
        .mail("joe@example.com", &["gone@example.net"], message)
        .await;
    id_of(&reply);
    wait_for_lines(&path, 5).await;
    assert_eq!(upstream.messages().len(), 1);

    // A simulated bounce and complaint put their addresses on the list.
    let reply = c
        .mail(
            "joe@example.com",
            &[
                "bounce@simulator.amazonses.com",
                "complaint@simulator.amazonses.com",
            ],
            message,
        )
        .await;
    id_of(&reply);
    for (address, reason) in [
        ("bounce%40simulator.amazonses.com", "BOUNCE"),
        ("complaint%40simulator.amazonses.com", "COMPLAINT"),
    ] {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let got = http.get(format!("{api}/{address}")).send().await.unwrap();
            if got.status() == 200 {
                let body: Value = got.json().await.unwrap();
                assert_eq!(body["SuppressedDestination"]["Reason"], reason, "{body}");
                assert_eq!(
                    body["SuppressedDestination"]["Attributes"]["MessageId"],
                    reply.trim_start_matches("250 2.0.0 Ok "),
                    "{body}"
                );
                break;
            }
            assert!(Instant::now() < deadline, "{address} was not suppressed");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    c.cmd("QUIT").await;
    relay.stop().await;
}

/// The whole road with real peers: the aws CLI creates an SNS destination, swaks sends a
/// message, the SNS endpoint gets Send and Delivery notifications; the CLI's update and
/// delete take effect on the next message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_aws_cli_creates_a_destination_and_swaks_mail_reaches_it() {
    let receiver = Receiver::start(Answer::Status(200)).await;
    let upstream = Capture::start(Script::default()).await;
    let config = format!(
        "{}\n[events.sns.\"{TOPIC}\"]\nendpoints = [\"{}\"]\n",
        standard_config(&upstream.url()),
        receiver.url("/ses")
    );
    let relay = EventsRelay::start(&config, |_, _| {}).await;
    let cli = Cli::sesv2(format!("http://{}", relay.admin));
    cli.ok(&[
        "create-configuration-set-event-destination",
        "--configuration-set-name",
        "marketing",
        "--event-destination-name",
        "to-app",
        "--event-destination",
        &format!(
            r#"{{"Enabled":true,"MatchingEventTypes":["SEND","DELIVERY"],"SnsDestination":{{"TopicArn":"{TOPIC}"}}}}"#
        ),
    ])
    .await;
    let listed = cli
        .ok(&[
            "get-configuration-set-event-destinations",
            "--configuration-set-name",
            "marketing",
        ])
        .await;
    assert_eq!(listed["EventDestinations"][0]["Name"], "to-app");

    let smtp = relay.smtp;
    let swaks = |subject: &'static str| {
        tokio::task::spawn_blocking(move || {
            let out = common::peers::swaks(
                smtp,
                &[
                    "--from",
                    "joe@example.com",
                    "--to",
                    "bob@example.net",
                    "--header",
                    &format!("Subject: {subject}"),
                    "--header",
                    "X-SES-MESSAGE-TAGS: campaign=spring",
                ],
            );
            let transcript = String::from_utf8_lossy(&out.stdout).into_owned();
            transcript
                .lines()
                .find_map(|l| l.strip_prefix("<-  250 2.0.0 Ok "))
                .unwrap_or_else(|| panic!("no 250 for the message:\n{transcript}"))
                .trim()
                .to_owned()
        })
    };
    let id = swaks("first").await.unwrap();
    let got = receiver.wait_for(2).await;
    let records: Vec<Value> = got.iter().map(|r| validate_sns(r, TOPIC)).collect();
    for record in &records {
        validate_record(record);
        assert_eq!(record["mail"]["messageId"], id.as_str());
        assert_eq!(record["mail"]["commonHeaders"]["subject"], "first");
        assert_eq!(record["mail"]["tags"]["campaign"], json!(["spring"]));
        assert_eq!(
            record["mail"]["tags"]["ses:configuration-set"],
            json!(["marketing"])
        );
    }
    assert_eq!(types(&records), ["Send", "Delivery"]);

    // Update: Delivery only.
    cli.ok(&[
        "update-configuration-set-event-destination",
        "--configuration-set-name",
        "marketing",
        "--event-destination-name",
        "to-app",
        "--event-destination",
        &format!(
            r#"{{"Enabled":true,"MatchingEventTypes":["DELIVERY"],"SnsDestination":{{"TopicArn":"{TOPIC}"}}}}"#
        ),
    ])
    .await;
    let id = swaks("second").await.unwrap();
    let got = receiver.wait_for(3).await;
    let third = validate_sns(&got[2], TOPIC);
    assert_eq!(third["eventType"], "Delivery");
    assert_eq!(third["mail"]["messageId"], id.as_str());

    // Delete: nothing more.
    cli.ok(&[
        "delete-configuration-set-event-destination",
        "--configuration-set-name",
        "marketing",
        "--event-destination-name",
        "to-app",
    ])
    .await;
    swaks("third").await.unwrap();
    upstream.wait_for(3).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(receiver.requests().len(), 3);
    relay.stop().await;
}
