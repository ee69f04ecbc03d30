//! sesrelay: an SMTP relay that enforces Amazon SES configuration sets.
//!
//! One message takes one road: listener → SMTP session → relay → policy → message
//! rewrite → upstream. Everything is a library so that tests drive it in-process.

pub mod account;
pub mod admin;
pub mod capture;
pub mod cli;
pub mod config;
pub mod events;
pub mod fdlimit;
pub mod health;
pub mod message;
pub mod metrics;
pub mod password;
pub mod policy;
pub mod relay;
pub mod reload;
pub mod server;
pub mod shared;
pub mod smtp;
pub mod statistics;
pub mod suppression;
pub mod tls;
pub mod upstream;
