//! The `switchyard` binary's library: the HTTP gateway over a
//! [`Router`](switchyard_router::Router), its status pages and admin API, and the built-in demo
//! services.
//!
//! `switchyard serve` is [`serve`]; integration tests and embedders build the same axum app
//! with [`app`].
//!
//! # Example
//!
//! ```
//! use switchyard_cli::{Gateway, builtin_router};
//! use tower::ServiceExt;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let gateway = Gateway::new(builtin_router(false));
//! let response = switchyard_cli::app(gateway)
//!     .oneshot(
//!         axum::http::Request::post("/billing").body(axum::body::Body::from("$100"))?,
//!     )
//!     .await?;
//! assert_eq!(response.status(), 200);
//! let body = axum::body::to_bytes(response.into_body(), 1024).await?;
//! assert_eq!(body, "billed:$100");
//! # Ok(())
//! # }
//! ```

mod admin;
mod demo;
mod gateway;
mod metrics;
mod serve;
mod status;
mod tls;
mod workers;

pub use demo::{builtin_router, seed_rows};
pub use gateway::{DEFAULT_MAX_BODY_BYTES, Gateway, app};
pub use metrics::prometheus;
pub use serve::{SHUTDOWN_GRACE, ServeConfig, serve, shutdown_signal};
pub use tls::{ServerTls, ServerTlsFiles, TlsStatus};
pub use workers::Workers;

/// The crate README's example, compiled as a doctest so the README never lies.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
