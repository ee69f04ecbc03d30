//! The SMTP protocol, knowing nothing of SES: sessions call a [`Handler`] that the relay
//! implements.

pub mod auth;
pub mod budget;
pub mod data;
pub mod listener;
pub mod reply;
pub mod session;

pub use budget::{InflightBudget, Reservation};
pub use reply::Reply;
pub use session::{Context, Event, Handler, Lifecycle, SessionConfig, Transaction};
