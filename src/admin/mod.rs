//! The admin listener: the SES v2 API (`/v2/email/...`) over HTTP, with axum.

pub mod sigv4;
