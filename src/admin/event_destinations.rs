//! The configuration-set event-destination operations (SPEC 8): create, get (all of a
//! set's), update, delete, with SES's shapes (`EventDestination{Enabled,
//! MatchingEventTypes, SnsDestination, EventBridgeDestination, KinesisFirehoseDestination,
//! CloudWatchDestination}`), its errors and its limit of 10 destinations per set. Changes go
//! to the config file as `[configuration_sets.SET.event_destinations.NAME]`.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};

use super::AdminState;
use super::api::parse;
use super::error::ApiError;
use crate::config::{ArnService, Config, SetRecord, is_arn_of, is_dimension_text};
use crate::events::{
    CloudWatchDimension, DestinationTarget, DimensionValueSource, EventDestination, EventType,
    MAX_DESTINATIONS_PER_SET,
};
use crate::policy::is_valid_configuration_set_name;

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct TopicArn {
    topic_arn: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct BusArn {
    event_bus_arn: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Firehose {
    iam_role_arn: String,
    delivery_stream_arn: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Dimension {
    dimension_name: String,
    dimension_value_source: String,
    default_dimension_value: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct CloudWatch {
    dimension_configurations: Vec<Dimension>,
}

/// `EventDestinationDefinition`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Definition {
    enabled: Option<bool>,
    matching_event_types: Option<Vec<String>>,
    sns_destination: Option<TopicArn>,
    event_bridge_destination: Option<BusArn>,
    kinesis_firehose_destination: Option<Firehose>,
    cloud_watch_destination: Option<CloudWatch>,
    pinpoint_destination: Option<Value>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct CreateRequest {
    event_destination_name: String,
    event_destination: Definition,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct UpdateRequest {
    event_destination: Definition,
}

fn arn(value: String, service: ArnService, field: &str) -> Result<String, ApiError> {
    if is_arn_of(&value, service) {
        Ok(value)
    } else {
        let shown: String = value
            .chars()
            .take(256)
            .map(|c| if c.is_control() { '?' } else { c })
            .collect();
        Err(ApiError::bad_request(format!("Invalid {field} <{shown}>.")))
    }
}

/// A definition as sesrelay keeps it: one target, known event types (each once). `Enabled`
/// absent is false, as at SES.
fn destination(def: Definition) -> Result<EventDestination, ApiError> {
    if def.pinpoint_destination.is_some() {
        return Err(ApiError::bad_request(
            "PinpointDestination is not supported by sesrelay; use SnsDestination, EventBridgeDestination, KinesisFirehoseDestination or CloudWatchDestination.",
        ));
    }
    let names = def.matching_event_types.unwrap_or_default();
    if names.is_empty() {
        return Err(ApiError::bad_request(
            "MatchingEventTypes must name at least one event type.",
        ));
    }
    let mut matching = Vec::with_capacity(names.len());
    for name in &names {
        let t = EventType::from_api_name(name).ok_or_else(|| {
            ApiError::bad_request(format!(
                "Invalid event type <{}>: one of {}.",
                name.chars().take(64).collect::<String>(),
                EventType::ALL.map(EventType::api_name).join(", ")
            ))
        })?;
        matching.push(t);
    }
    matching.sort();
    matching.dedup();
    let mut targets = Vec::new();
    if let Some(sns) = def.sns_destination {
        targets.push(DestinationTarget::Sns {
            topic_arn: arn(sns.topic_arn, ArnService::Sns, "TopicArn")?,
        });
    }
    if let Some(bus) = def.event_bridge_destination {
        targets.push(DestinationTarget::EventBridge {
            event_bus_arn: arn(bus.event_bus_arn, ArnService::EventBridge, "EventBusArn")?,
        });
    }
    if let Some(firehose) = def.kinesis_firehose_destination {
        targets.push(DestinationTarget::Firehose {
            delivery_stream_arn: arn(
                firehose.delivery_stream_arn,
                ArnService::Firehose,
                "DeliveryStreamArn",
            )?,
            iam_role_arn: firehose.iam_role_arn,
        });
    }
    if let Some(cloudwatch) = def.cloud_watch_destination {
        if cloudwatch.dimension_configurations.is_empty() {
            return Err(ApiError::bad_request(
                "CloudWatchDestination.DimensionConfigurations must hold at least one dimension.",
            ));
        }
        let mut dimensions = Vec::new();
        for d in cloudwatch.dimension_configurations {
            let source = DimensionValueSource::from_api_name(&d.dimension_value_source)
                .ok_or_else(|| {
                    ApiError::bad_request(
                        "DimensionValueSource must be MESSAGE_TAG, EMAIL_HEADER or LINK_TAG.",
                    )
                })?;
            if !is_dimension_text(&d.dimension_name)
                || !is_dimension_text(&d.default_dimension_value)
            {
                return Err(ApiError::bad_request(
                    "Dimension names and default values are 1-256 characters of A-Z, a-z, 0-9, '_', '-', '.', ':', '@'.",
                ));
            }
            dimensions.push(CloudWatchDimension {
                name: d.dimension_name,
                value_source: source,
                default_value: d.default_dimension_value,
            });
        }
        targets.push(DestinationTarget::CloudWatch { dimensions });
    }
    let target = match targets.len() {
        1 => targets.remove(0),
        0 => {
            return Err(ApiError::bad_request(
                "An event destination needs one of SnsDestination, EventBridgeDestination, KinesisFirehoseDestination, CloudWatchDestination.",
            ));
        }
        _ => {
            return Err(ApiError::bad_request(
                "An event destination has exactly one of SnsDestination, EventBridgeDestination, KinesisFirehoseDestination, CloudWatchDestination.",
            ));
        }
    };
    Ok(EventDestination {
        enabled: def.enabled.unwrap_or(false),
        matching_event_types: matching,
        target,
    })
}

/// `EventDestination` as GetConfigurationSetEventDestinations lists it.
fn shape(name: &str, dest: &EventDestination) -> Value {
    let mut out = json!({
        "Name": name,
        "Enabled": dest.enabled,
        "MatchingEventTypes": dest
            .matching_event_types
            .iter()
            .map(|t| t.api_name())
            .collect::<Vec<_>>(),
    });
    let (key, value) = match &dest.target {
        DestinationTarget::Sns { topic_arn } => {
            ("SnsDestination", json!({ "TopicArn": topic_arn }))
        }
        DestinationTarget::EventBridge { event_bus_arn } => (
            "EventBridgeDestination",
            json!({ "EventBusArn": event_bus_arn }),
        ),
        DestinationTarget::Firehose {
            delivery_stream_arn,
            iam_role_arn,
        } => (
            "KinesisFirehoseDestination",
            json!({ "IamRoleArn": iam_role_arn, "DeliveryStreamArn": delivery_stream_arn }),
        ),
        DestinationTarget::CloudWatch { dimensions } => (
            "CloudWatchDestination",
            json!({ "DimensionConfigurations": dimensions.iter().map(|d| json!({
                "DimensionName": d.name,
                "DimensionValueSource": d.value_source.api_name(),
                "DefaultDimensionValue": d.default_value,
            })).collect::<Vec<_>>() }),
        ),
    };
    out[key] = value;
    out
}

/// The set's record, or SES's NotFoundException.
fn set_record<'a>(config: &'a Config, set: &str) -> Result<&'a SetRecord, ApiError> {
    config
        .resources
        .configuration_sets
        .get(set)
        .ok_or_else(|| ApiError::no_configuration_set(set))
}

/// Ok when the set exists and has the destination `name`; else SES's NotFoundException.
fn existing_destination(config: &Config, set: &str, name: &str) -> Result<(), ApiError> {
    if set_record(config, set)?
        .event_destinations
        .contains_key(name)
    {
        Ok(())
    } else {
        Err(ApiError::not_found(format!(
            "Event destination <{name}> does not exist."
        )))
    }
}

pub async fn create(
    State(state): State<AdminState>,
    Path(set): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let req: CreateRequest = parse(&body)?;
    let name = req.event_destination_name;
    if !is_valid_configuration_set_name(&name) {
        return Err(ApiError::bad_request(format!(
            "Invalid event destination name <{}>: 1-64 characters of A-Z, a-z, 0-9, '_' and '-'.",
            name.chars().take(64).collect::<String>()
        )));
    }
    let dest = destination(req.event_destination)?;
    state
        .store
        .edit(|editor, config| {
            let record = set_record(config, &set)?;
            if record.event_destinations.contains_key(&name) {
                return Err(ApiError::already_exists(format!(
                    "Event destination <{name}> already exists."
                )));
            }
            if record.event_destinations.len() >= MAX_DESTINATIONS_PER_SET {
                return Err(ApiError::limit_exceeded(format!(
                    "Configuration set <{set}> has {MAX_DESTINATIONS_PER_SET} event destinations, the most SES allows."
                )));
            }
            editor.put_event_destination(&set, &name, &dest)
        })
        .await?;
    tracing::info!(configuration_set = %set, destination = %name, "event destination created");
    Ok(Json(json!({})).into_response())
}

pub async fn get_all(
    State(state): State<AdminState>,
    Path(set): Path<String>,
) -> Result<Response, ApiError> {
    let config = state.relay.config();
    let record = set_record(&config, &set)?;
    let list: Vec<Value> = record
        .event_destinations
        .iter()
        .map(|(name, dest)| shape(name, dest))
        .collect();
    Ok(Json(json!({ "EventDestinations": list })).into_response())
}

pub async fn update(
    State(state): State<AdminState>,
    Path((set, name)): Path<(String, String)>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let req: UpdateRequest = parse(&body)?;
    let dest = destination(req.event_destination)?;
    state
        .store
        .edit(|editor, config| {
            existing_destination(config, &set, &name)?;
            editor.put_event_destination(&set, &name, &dest)
        })
        .await?;
    tracing::info!(configuration_set = %set, destination = %name, "event destination updated");
    Ok(Json(json!({})).into_response())
}

pub async fn delete(
    State(state): State<AdminState>,
    Path((set, name)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    state
        .store
        .edit(|editor, config| {
            existing_destination(config, &set, &name)?;
            editor.remove_event_destination(&set, &name)
        })
        .await?;
    tracing::info!(configuration_set = %set, destination = %name, "event destination deleted");
    Ok(Json(json!({})).into_response())
}
