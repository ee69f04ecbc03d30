//! Event publishing (SPEC 8): the events of the mail sent with a configuration set, in SES's
//! own record format, to the destinations the set names.
//!
//! This module holds the vocabulary shared by the configuration, the API and the publisher:
//! the event types, a set's event destinations, and the `[events]` section's mappings from
//! SES destination ARNs to local sinks; and the mailbox simulator's addresses. `record`
//! makes the records, `publish` takes them to the sinks.

mod http;
pub mod publish;
pub mod record;

use std::collections::BTreeMap;
use std::path::PathBuf;

pub use publish::{Emitter, Publisher, RetryPolicy, SinkKind};
pub use record::{BounceKind, Mail, Origin, Record};

use crate::config::Config;

/// An SES event type. The API names them `SEND`, `DELIVERY`, ...; records name them `Send`,
/// `Delivery`, ...
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum EventType {
    Send,
    Reject,
    Bounce,
    Complaint,
    Delivery,
    Open,
    Click,
    RenderingFailure,
    DeliveryDelay,
    Subscription,
}

impl EventType {
    pub const ALL: [EventType; 10] = [
        EventType::Send,
        EventType::Reject,
        EventType::Bounce,
        EventType::Complaint,
        EventType::Delivery,
        EventType::Open,
        EventType::Click,
        EventType::RenderingFailure,
        EventType::DeliveryDelay,
        EventType::Subscription,
    ];

    /// The API's name (`MatchingEventTypes`), also the config file's.
    pub fn api_name(self) -> &'static str {
        match self {
            EventType::Send => "SEND",
            EventType::Reject => "REJECT",
            EventType::Bounce => "BOUNCE",
            EventType::Complaint => "COMPLAINT",
            EventType::Delivery => "DELIVERY",
            EventType::Open => "OPEN",
            EventType::Click => "CLICK",
            EventType::RenderingFailure => "RENDERING_FAILURE",
            EventType::DeliveryDelay => "DELIVERY_DELAY",
            EventType::Subscription => "SUBSCRIPTION",
        }
    }

    /// The type of an API name; `None` for anything else.
    pub fn from_api_name(name: &str) -> Option<EventType> {
        EventType::ALL.into_iter().find(|t| t.api_name() == name)
    }

    /// `eventType` in a record.
    pub fn record_name(self) -> &'static str {
        match self {
            EventType::Send => "Send",
            EventType::Reject => "Reject",
            EventType::Bounce => "Bounce",
            EventType::Complaint => "Complaint",
            EventType::Delivery => "Delivery",
            EventType::Open => "Open",
            EventType::Click => "Click",
            EventType::RenderingFailure => "Rendering Failure",
            EventType::DeliveryDelay => "DeliveryDelay",
            EventType::Subscription => "Subscription",
        }
    }

    /// The record's member holding the event's details (`send`, `delivery`, ...).
    pub fn record_member(self) -> &'static str {
        match self {
            EventType::Send => "send",
            EventType::Reject => "reject",
            EventType::Bounce => "bounce",
            EventType::Complaint => "complaint",
            EventType::Delivery => "delivery",
            EventType::Open => "open",
            EventType::Click => "click",
            EventType::RenderingFailure => "failure",
            EventType::DeliveryDelay => "deliveryDelay",
            EventType::Subscription => "subscription",
        }
    }

    /// EventBridge's `detail-type`.
    pub fn detail_type(self) -> &'static str {
        match self {
            EventType::Send => "Email Sent",
            EventType::Reject => "Email Rejected",
            EventType::Bounce => "Email Bounced",
            EventType::Complaint => "Email Complaint Received",
            EventType::Delivery => "Email Delivered",
            EventType::Open => "Email Opened",
            EventType::Click => "Email Clicked",
            EventType::RenderingFailure => "Email Rendering Failed",
            EventType::DeliveryDelay => "Email Delivery Delayed",
            EventType::Subscription => "Email Subscribed",
        }
    }
}

/// Where a CloudWatch dimension takes its value from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DimensionValueSource {
    MessageTag,
    EmailHeader,
    LinkTag,
}

impl DimensionValueSource {
    pub fn api_name(self) -> &'static str {
        match self {
            DimensionValueSource::MessageTag => "MESSAGE_TAG",
            DimensionValueSource::EmailHeader => "EMAIL_HEADER",
            DimensionValueSource::LinkTag => "LINK_TAG",
        }
    }

    pub fn from_api_name(name: &str) -> Option<DimensionValueSource> {
        [
            DimensionValueSource::MessageTag,
            DimensionValueSource::EmailHeader,
            DimensionValueSource::LinkTag,
        ]
        .into_iter()
        .find(|s| s.api_name() == name)
    }
}

/// One CloudWatch dimension of a destination.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloudWatchDimension {
    pub name: String,
    pub value_source: DimensionValueSource,
    pub default_value: String,
}

/// What a destination publishes to, as SES names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DestinationTarget {
    Sns {
        topic_arn: String,
    },
    EventBridge {
        event_bus_arn: String,
    },
    Firehose {
        delivery_stream_arn: String,
        iam_role_arn: String,
    },
    CloudWatch {
        dimensions: Vec<CloudWatchDimension>,
    },
}

/// A configuration set's event destination.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventDestination {
    pub enabled: bool,
    /// The types it receives, in `EventType` order, each once.
    pub matching_event_types: Vec<EventType>,
    pub target: DestinationTarget,
}

impl EventDestination {
    /// Whether this destination takes events of `event_type` now.
    pub fn takes(&self, event_type: EventType) -> bool {
        self.enabled && self.matching_event_types.contains(&event_type)
    }
}

/// At most this many destinations per configuration set, as SES allows.
pub const MAX_DESTINATIONS_PER_SET: usize = 10;

/// The `[events]` section: where records for each SES destination go on this machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventsConfig {
    /// `mail.sendingAccountId`, and the account in ARNs sesrelay writes.
    pub account_id: String,
    /// Destinations without a mapping write JSON lines to `<dir>/<set>/<destination>.jsonl`.
    pub dir: PathBuf,
    /// SNS topic ARN → the HTTP(S) endpoints subscribed to it.
    pub sns: BTreeMap<String, Vec<String>>,
    /// EventBridge bus ARN → the HTTP(S) endpoints that receive its events.
    pub eventbridge: BTreeMap<String, Vec<String>>,
    /// Firehose delivery stream ARN → the directory its JSON lines go to.
    pub firehose: BTreeMap<String, PathBuf>,
}

impl Default for EventsConfig {
    fn default() -> EventsConfig {
        EventsConfig {
            account_id: "000000000000".to_owned(),
            dir: PathBuf::from("events"),
            sns: BTreeMap::new(),
            eventbridge: BTreeMap::new(),
            firehose: BTreeMap::new(),
        }
    }
}

/// Whether the set `set` has a destination that is enabled: only then are a message's
/// records made.
pub fn has_destinations(config: &Config, set: &str) -> bool {
    config
        .resources
        .configuration_sets
        .get(set)
        .is_some_and(|s| s.event_destinations.values().any(|d| d.enabled))
}

/// A mailbox of SES's mailbox simulator (`*@simulator.amazonses.com`): never delivered
/// anywhere, it produces the events of its name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Simulated {
    /// `success@`: Delivery.
    Success,
    /// `bounce@`: Bounce (Permanent, General, `550 5.1.1 user unknown`).
    Bounce,
    /// `ooto@`: Delivery (the out-of-office answer goes nowhere).
    Ooto,
    /// `complaint@`: Delivery, then Complaint (abuse).
    Complaint,
    /// `suppressionlist@`: Bounce (Permanent, OnAccountSuppressionList).
    SuppressionList,
    /// Any other mailbox of the simulator's domain: a mailbox that does not exist, so
    /// Bounce (Permanent, General, `550 5.1.1 user unknown`), as `bounce@`.
    Unknown,
}

/// The simulator mailbox `address` is (case-insensitive; `success+label@...` is
/// `success@...`), or `None` when it is not the simulator's.
pub fn simulated(address: &str) -> Option<Simulated> {
    let lower = address.to_ascii_lowercase();
    if !crate::policy::is_mailbox_simulator(&lower) {
        return None;
    }
    let (local, _) = lower.rsplit_once('@')?;
    let local = local.split_once('+').map_or(local, |(base, _)| base);
    Some(match local {
        "success" => Simulated::Success,
        "bounce" => Simulated::Bounce,
        "ooto" => Simulated::Ooto,
        "complaint" => Simulated::Complaint,
        "suppressionlist" => Simulated::SuppressionList,
        _ => Simulated::Unknown,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn simulator_mailboxes() {
        let rows = [
            ("success@simulator.amazonses.com", Some(Simulated::Success)),
            (
                "Success+run-7@Simulator.AmazonSES.com",
                Some(Simulated::Success),
            ),
            ("bounce@simulator.amazonses.com", Some(Simulated::Bounce)),
            ("ooto+x@simulator.amazonses.com", Some(Simulated::Ooto)),
            (
                "complaint@simulator.amazonses.com",
                Some(Simulated::Complaint),
            ),
            (
                "suppressionlist@simulator.amazonses.com",
                Some(Simulated::SuppressionList),
            ),
            ("nobody@simulator.amazonses.com", Some(Simulated::Unknown)),
            ("success@example.com", None),
            ("success@simulator.amazonses.com.evil.test", None),
        ];
        for (address, want) in rows {
            assert_eq!(simulated(address), want, "{address}");
        }
    }

    #[test]
    fn api_names_round_trip() {
        for t in EventType::ALL {
            assert_eq!(EventType::from_api_name(t.api_name()), Some(t));
        }
    }
}
