//! The provider errors.

use std::fmt;

use switchyard_core::ConfigError;
use tower::BoxError;

/// Why a provider could not be built, initialized, found or used. Each names the provider;
/// nothing else changed (the other providers keep serving).
#[derive(Debug)]
#[non_exhaustive]
pub enum ProviderError {
    /// No factory is registered under this name.
    UnknownFactory(String),
    /// The provider's config does not fit its factory's typed config.
    InvalidConfig {
        /// The provider.
        provider: String,
        /// The first bad field (its JSON path) and why.
        error: ConfigError,
    },
    /// The factory failed (or panicked) building the provider.
    Factory {
        /// The provider.
        provider: String,
        /// What the factory said.
        source: BoxError,
    },
    /// The provider's [`Initialize`](crate::Initialize) failed (or panicked): it was left out.
    Initialize {
        /// The provider.
        provider: String,
        /// What its initialization said.
        source: BoxError,
    },
    /// A provider of this name is initialized already (or being initialized).
    AlreadyInitialized(String),
    /// No initialized provider has this name.
    NotFound(String),
    /// The manager was closed ([`Manager::close_all`](crate::Manager::close_all)).
    Closed,
    /// No provider is available now (none initialized, or none healthy and ready).
    NoneAvailable,
}

impl fmt::Display for ProviderError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::UnknownFactory(name) => write!(f, "no provider factory named {name:?}"),
            Self::InvalidConfig { provider, error } => {
                write!(f, "invalid config for provider {provider:?}: {error}")
            }
            Self::Factory { provider, source } => {
                write!(f, "provider {provider:?} could not be built: {source}")
            }
            Self::Initialize { provider, source } => {
                write!(f, "provider {provider:?} failed to initialize: {source}")
            }
            Self::AlreadyInitialized(name) => {
                write!(f, "provider {name:?} is already initialized")
            }
            Self::NotFound(name) => write!(f, "no initialized provider named {name:?}"),
            Self::Closed => f.write_str("the provider manager is closed"),
            Self::NoneAvailable => f.write_str("no provider is available"),
        }
    }
}

impl std::error::Error for ProviderError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::InvalidConfig { error, .. } => Some(error),
            Self::Factory { source, .. } | Self::Initialize { source, .. } => Some(&**source),
            _ => None,
        }
    }
}

/// The providers whose [`Close`](crate::Close) failed, timed out or panicked during
/// [`Manager::close_all`](crate::Manager::close_all). Every provider was closed (or tried)
/// regardless.
#[derive(Debug)]
pub struct CloseErrors {
    errors: Vec<(String, BoxError)>,
}

impl CloseErrors {
    pub(crate) fn new(errors: Vec<(String, BoxError)>) -> Self {
        Self { errors }
    }

    /// Each failed provider's name and error, in the order they were closed.
    pub fn errors(&self) -> &[(String, BoxError)] {
        &self.errors
    }

    /// The failed providers' names, in the order they were closed.
    pub fn providers(&self) -> impl Iterator<Item = &str> {
        self.errors.iter().map(|(name, _)| name.as_str())
    }
}

impl fmt::Display for CloseErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} provider(s) failed to close:", self.errors.len())?;
        for (name, error) in &self.errors {
            write!(f, " {name}: {error};")?;
        }
        Ok(())
    }
}

impl std::error::Error for CloseErrors {}

/// A close that outlasted its deadline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloseTimedOut {
    pub(crate) after: std::time::Duration,
}

impl fmt::Display for CloseTimedOut {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "close did not finish within {:?}", self.after)
    }
}

impl std::error::Error for CloseTimedOut {}
