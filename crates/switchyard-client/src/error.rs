//! Credential errors: a TLS or auth setting that cannot work, with its code and the field it
//! names.

use std::borrow::Cow;
use std::error::Error;
use std::fmt;

use switchyard_core::ConfigError;

/// The credential error codes, stable across releases (the plugin system's `AUTH_11xx`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum AuthCode {
    /// `AUTH_1101`: `api_key` auth with no key (nor `api_key_env`, or it is unset).
    MissingApiKey,
    /// `AUTH_1102`: `bearer` auth with no token (nor `token_env`, or it is unset).
    MissingBearerToken,
    /// `AUTH_1103`: `basic` auth without a username and a password.
    MissingBasicCredentials,
    /// `AUTH_1104`: a certificate or key is missing, unreadable or does not parse: a client
    /// certificate without its key (or the reverse), a `ca_file` with no certificate in it,
    /// a key that does not match its certificate.
    MissingMtlsCerts,
    /// `AUTH_1105`: an auth `method` this version does not know.
    UnsupportedMethod,
}

impl AuthCode {
    /// The code as written in errors and logs: `"AUTH_1104"`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::MissingApiKey => "AUTH_1101",
            Self::MissingBearerToken => "AUTH_1102",
            Self::MissingBasicCredentials => "AUTH_1103",
            Self::MissingMtlsCerts => "AUTH_1104",
            Self::UnsupportedMethod => "AUTH_1105",
        }
    }
}

impl fmt::Display for AuthCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A TLS or auth setting that cannot work: its [`AuthCode`], the dotted field it names
/// (`tls.cert_file`) and why. The reason never holds a secret: it names files and
/// environment variables, not their contents.
///
/// `Display` reads ``AUTH_1104 invalid `tls.key_file`: reason``.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CredentialError {
    code: AuthCode,
    /// The field and the reason: core's config error, with the code beside it.
    error: ConfigError,
}

impl CredentialError {
    /// `field` rejected with `code` for `reason` (lower case, no trailing period).
    pub fn new(
        code: AuthCode,
        field: impl Into<Cow<'static, str>>,
        reason: impl Into<String>,
    ) -> Self {
        Self {
            code,
            error: ConfigError::new(field, reason.into()),
        }
    }

    /// Prefixes the field path with the section it sits in (`transport`).
    #[must_use]
    pub fn within(self, section: &str) -> Self {
        Self {
            code: self.code,
            error: self.error.within(section),
        }
    }

    /// The code.
    pub fn code(&self) -> AuthCode {
        self.code
    }

    /// The dotted path of the field.
    pub fn field(&self) -> &str {
        self.error.field()
    }

    /// Why it was rejected.
    pub fn reason(&self) -> &str {
        self.error.reason()
    }
}

impl fmt::Display for CredentialError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.code, self.error)
    }
}

impl Error for CredentialError {}

impl From<CredentialError> for ConfigError {
    /// The same field and reason, the code first in the reason.
    fn from(err: CredentialError) -> Self {
        ConfigError::new(
            err.error.field().to_owned(),
            format!("{}: {}", err.code, err.error.reason()),
        )
    }
}

/// A config error read by serde, without the value serde's message quotes when the field sits
/// in an `auth` section (`auth`, `auth.token`, `transport.auth.password`): that value may be a
/// secret. Unknown and missing fields name keys only and are kept; a wrong value keeps what
/// was expected. Other fields are returned as they are.
///
/// ```
/// use switchyard_client::withhold_secret_values;
/// use switchyard_core::ConfigError;
///
/// let err = ConfigError::new("auth.token", "invalid type: integer `123456`, expected a string");
/// let err = withhold_secret_values(err);
/// assert_eq!(err.field(), "auth.token");
/// assert!(!err.reason().contains("123456"));
/// assert!(err.reason().ends_with("expected a string"));
/// ```
pub fn withhold_secret_values(error: ConfigError) -> ConfigError {
    if !error.field().split('.').any(|segment| segment == "auth") {
        return error;
    }
    let reason = error.reason();
    if reason.starts_with("unknown field") || reason.starts_with("missing field") {
        return error;
    }
    let withheld = match reason.split_once(", expected ") {
        Some((_, expected)) => {
            format!("invalid value (not repeated: it may be a secret), expected {expected}")
        }
        None => "invalid value (not repeated: it may be a secret)".to_owned(),
    };
    ConfigError::new(error.field().to_owned(), withheld)
}
