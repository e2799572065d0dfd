//! The outbound connection every switchyard client transport shares.
//!
//! - **The SSRF guard** ([`Guard`], [`GuardedResolver`]): an endpoint's IP literal is checked
//!   when it is accepted, and a host name on every address it resolves to, at connect time, so
//!   DNS rebinding cannot reach an internal address. [`internal_reason`] says what counts as
//!   internal; a refusal is [`SsrfBlocked`].
//! - **TLS** ([`TlsConfig`]): rustls over ring, no OpenSSL. The system's root store by
//!   default, or a private CA (`ca_file`); a `server_name` to verify instead of the endpoint's
//!   host; a client certificate for mTLS (`cert_file` + `key_file`: PKCS#8, PKCS#1 or SEC1).
//!   There is no option to skip verification. A setting that cannot work is a
//!   [`CredentialError`] with its [`AuthCode`] and the field it names; a handshake that fails
//!   is a [`TlsFailed`] saying why ([`TlsFailure`]: unknown CA, name mismatch, expired, a
//!   client certificate required or refused).
//!
//! - **Credentials** ([`AuthConfig`], [`AuthLayer`]): an API key, a bearer token, basic
//!   credentials, custom headers or a client certificate, each secret given in the config or
//!   named by an environment variable (`token_env`); headers marked sensitive, secrets masked
//!   in `Debug` output and never in an error.
//!
//! [`Guard::connector`] builds the one connector type ([`Connector`]): hyper-util's TCP
//! connector over the guarded resolver, under hyper-rustls.
//!
//! ```
//! use switchyard_client::{Guard, TlsConfig};
//!
//! let guard = Guard::new();
//! // An internal IP literal is refused at once; a name is checked when it resolves.
//! let refused = guard.endpoint("https://127.0.0.1/charge", "https://host/path").unwrap_err();
//! assert!(refused.to_string().contains("loopback"));
//!
//! // TLS settings are data; the files are read when a connector is built.
//! let tls: TlsConfig = serde_json::from_str(r#"{ "ca_file": "/no/such/ca.pem" }"#)?;
//! let err = guard.connector(true, &tls, &[b"http/1.1"], None).unwrap_err();
//! assert_eq!(err.code().as_str(), "AUTH_1104");
//! assert_eq!(err.field(), "ca_file");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod auth;
mod connector;
mod error;
mod failure;
mod ssrf;
#[cfg(feature = "test-util")]
pub mod test_util;
mod tls;

pub use auth::{AuthConfig, AuthHeaders, AuthLayer, Authorized};
pub use connector::{Connector, Guard, redact_url};
pub use error::{AuthCode, CredentialError, withhold_secret_values};
pub use failure::{TlsFailed, TlsFailure};
pub use ssrf::{
    GuardedResolver, Resolver, SsrfBlocked, check_literal_host, internal_reason, system_resolver,
};
pub use tls::{TlsConfig, load_certificates, load_private_key};

/// Registers this crate's rejection types with core, so `find_rejection` sees them in any
/// error chain. Idempotent; transports call it when they are built.
pub fn register_rejections() {
    switchyard_core::rejection::register::<SsrfBlocked>();
    switchyard_core::rejection::register::<TlsFailed>();
}

/// The crate README's example, compiled as a doctest so the README never lies.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
