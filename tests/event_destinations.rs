//! The event-destination operations over HTTP (SPEC 8): create, get, update, delete with
//! SES's shapes and errors, the limit of 10 per set, and the config file that keeps them
//! across restarts.

mod common;

use std::path::Path;
use std::time::Duration;

use common::Served;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sesrelay::config::Config;
use sesrelay::events::{DestinationTarget, EventType};

struct Api {
    served: Served,
    base: String,
    http: reqwest::Client,
}

impl Api {
    async fn start(path: &Path) -> Api {
        let served = Served::load(path).await;
        Api {
            base: served.base(),
            served,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .unwrap(),
        }
    }

    async fn stop(self) {
        self.served.stop().await;
    }

    async fn call(&self, method: Method, path: &str, body: Option<Value>) -> (StatusCode, Value) {
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if let Some(body) = body {
            req = req.json(&body);
        }
        let response = req.send().await.unwrap();
        let status = response.status();
        (status, response.json().await.unwrap_or(Value::Null))
    }
}

const PATH: &str = "/v2/email/configuration-sets/marketing/event-destinations";

fn sns(name: &str, types: &[&str]) -> Value {
    json!({
        "EventDestinationName": name,
        "EventDestination": {
            "Enabled": true,
            "MatchingEventTypes": types,
            "SnsDestination": { "TopicArn": "arn:aws:sns:us-east-1:000000000000:ses-events" },
        },
    })
}

fn setup() -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sesrelay.toml");
    std::fs::write(
        &path,
        format!(
            "# The operator's comment.\n[server]\nlisten = [\"127.0.0.1:0\"]\n\n[admin]\nlisten = \"127.0.0.1:0\"\n\n\
             [upstream]\nurl = \"dir:{}\"\n\n[configuration_sets.marketing]\n",
            dir.path().join("outbox").display()
        ),
    )
    .unwrap();
    (dir, path)
}

#[tokio::test]
async fn destinations_are_created_listed_updated_deleted_and_kept() {
    let (_dir, path) = setup();
    let api = Api::start(&path).await;

    let (status, body) = api
        .call(
            Method::POST,
            PATH,
            Some(sns("to-app", &["SEND", "DELIVERY", "SEND"])),
        )
        .await;
    assert_eq!((status, &body), (StatusCode::OK, &json!({})));
    let firehose = json!({
        "EventDestinationName": "archive",
        "EventDestination": {
            "MatchingEventTypes": ["BOUNCE", "COMPLAINT"],
            "KinesisFirehoseDestination": {
                "IamRoleArn": "arn:aws:iam::000000000000:role/firehose",
                "DeliveryStreamArn": "arn:aws:firehose:us-east-1:000000000000:deliverystream/ses",
            },
        },
    });
    assert_eq!(
        api.call(Method::POST, PATH, Some(firehose)).await.0,
        StatusCode::OK
    );
    let cloudwatch = json!({
        "EventDestinationName": "dashboards",
        "EventDestination": {
            "Enabled": true,
            "MatchingEventTypes": ["SEND"],
            "CloudWatchDestination": { "DimensionConfigurations": [{
                "DimensionName": "campaign",
                "DimensionValueSource": "MESSAGE_TAG",
                "DefaultDimensionValue": "none",
            }] },
        },
    });
    assert_eq!(
        api.call(Method::POST, PATH, Some(cloudwatch)).await.0,
        StatusCode::OK
    );

    let (status, body) = api.call(Method::GET, PATH, None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        body,
        json!({ "EventDestinations": [
            { "Name": "archive", "Enabled": false, "MatchingEventTypes": ["BOUNCE", "COMPLAINT"],
              "KinesisFirehoseDestination": {
                  "IamRoleArn": "arn:aws:iam::000000000000:role/firehose",
                  "DeliveryStreamArn": "arn:aws:firehose:us-east-1:000000000000:deliverystream/ses" } },
            { "Name": "dashboards", "Enabled": true, "MatchingEventTypes": ["SEND"],
              "CloudWatchDestination": { "DimensionConfigurations": [{
                  "DimensionName": "campaign", "DimensionValueSource": "MESSAGE_TAG",
                  "DefaultDimensionValue": "none" }] } },
            { "Name": "to-app", "Enabled": true, "MatchingEventTypes": ["SEND", "DELIVERY"],
              "SnsDestination": { "TopicArn": "arn:aws:sns:us-east-1:000000000000:ses-events" } },
        ] })
    );

    // Update replaces the definition: another target, other types.
    let (status, _) = api
        .call(
            Method::PUT,
            &format!("{PATH}/to-app"),
            Some(json!({ "EventDestination": {
                "Enabled": false,
                "MatchingEventTypes": ["BOUNCE"],
                "EventBridgeDestination": {
                    "EventBusArn": "arn:aws:events:us-east-1:000000000000:event-bus/default" },
            } })),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        api.call(Method::DELETE, &format!("{PATH}/dashboards"), None)
            .await
            .0,
        StatusCode::OK
    );
    api.stop().await;

    // The file holds them, comments kept; a restart serves them.
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.starts_with("# The operator's comment.\n"), "{text}");
    assert!(
        text.contains("[configuration_sets.marketing.event_destinations.to-app]"),
        "{text}"
    );
    let config = Config::load(&path).unwrap();
    let dests = &config.resources.configuration_sets["marketing"].event_destinations;
    assert_eq!(dests.keys().collect::<Vec<_>>(), ["archive", "to-app"]);
    assert!(!dests["to-app"].enabled);
    assert_eq!(dests["to-app"].matching_event_types, [EventType::Bounce]);
    assert!(matches!(
        dests["to-app"].target,
        DestinationTarget::EventBridge { .. }
    ));
    let api = Api::start(&path).await;
    let (_, body) = api.call(Method::GET, PATH, None).await;
    assert_eq!(body["EventDestinations"].as_array().unwrap().len(), 2);
    api.stop().await;
}

#[tokio::test]
async fn ses_errors_for_destinations() {
    let (_dir, path) = setup();
    let api = Api::start(&path).await;
    let error = |(status, body): (StatusCode, Value)| {
        (
            status.as_u16(),
            body["__type"].as_str().unwrap_or_default().to_owned(),
            body["message"].as_str().unwrap_or_default().to_owned(),
        )
    };
    let missing_set = "/v2/email/configuration-sets/nosuch/event-destinations";
    assert_eq!(
        error(
            api.call(Method::POST, missing_set, Some(sns("a", &["SEND"])))
                .await
        ),
        (
            404,
            "NotFoundException".into(),
            "Configuration set <nosuch> does not exist.".into()
        )
    );
    assert_eq!(
        error(api.call(Method::GET, missing_set, None).await).1,
        "NotFoundException"
    );
    assert_eq!(
        api.call(Method::POST, PATH, Some(sns("a", &["SEND"])))
            .await
            .0,
        StatusCode::OK
    );
    assert_eq!(
        error(
            api.call(Method::POST, PATH, Some(sns("a", &["SEND"])))
                .await
        ),
        (
            400,
            "AlreadyExistsException".into(),
            "Event destination <a> already exists.".into()
        )
    );
    assert_eq!(
        error(
            api.call(Method::PUT, &format!("{PATH}/b"), Some(sns("b", &["SEND"])))
                .await
        ),
        (
            404,
            "NotFoundException".into(),
            "Event destination <b> does not exist.".into()
        )
    );
    assert_eq!(
        error(api.call(Method::DELETE, &format!("{PATH}/b"), None).await).1,
        "NotFoundException"
    );
    for (body, text) in [
        (sns("c", &["SENT"]), "Invalid event type <SENT>"),
        (
            sns("c", &[]),
            "MatchingEventTypes must name at least one event type.",
        ),
        (
            sns("bad name", &["SEND"]),
            "Invalid event destination name <bad name>",
        ),
        (
            json!({ "EventDestinationName": "c", "EventDestination": {
                "MatchingEventTypes": ["SEND"],
                "SnsDestination": { "TopicArn": "arn:aws:sqs:us-east-1:000000000000:q" } } }),
            "Invalid TopicArn <arn:aws:sqs:us-east-1:000000000000:q>.",
        ),
        (
            json!({ "EventDestinationName": "c", "EventDestination": {
                "MatchingEventTypes": ["SEND"] } }),
            "An event destination needs one of",
        ),
        (
            json!({ "EventDestinationName": "c", "EventDestination": {
                "MatchingEventTypes": ["SEND"],
                "SnsDestination": { "TopicArn": "arn:aws:sns:us-east-1:000000000000:t" },
                "EventBridgeDestination": {
                    "EventBusArn": "arn:aws:events:us-east-1:000000000000:event-bus/default" } } }),
            "An event destination has exactly one of",
        ),
        (
            json!({ "EventDestinationName": "c", "EventDestination": {
                "MatchingEventTypes": ["SEND"],
                "PinpointDestination": { "ApplicationArn": "arn:aws:mobiletargeting:us-east-1:000000000000:apps/x" } } }),
            "PinpointDestination is not supported by sesrelay",
        ),
    ] {
        let (status, code, message) = error(api.call(Method::POST, PATH, Some(body)).await);
        assert_eq!(
            (status, code.as_str()),
            (400, "BadRequestException"),
            "{message}"
        );
        assert!(message.starts_with(text), "{message}");
    }
    // At most 10 per set.
    for i in 1..10 {
        let name = format!("d{i}");
        assert_eq!(
            api.call(Method::POST, PATH, Some(sns(&name, &["SEND"])))
                .await
                .0,
            StatusCode::OK
        );
    }
    assert_eq!(
        error(
            api.call(Method::POST, PATH, Some(sns("d10", &["SEND"])))
                .await
        ),
        (
            400,
            "LimitExceededException".into(),
            "Configuration set <marketing> has 10 event destinations, the most SES allows.".into()
        )
    );
    api.stop().await;
}
