//! The registry: named factories that build providers from config, and the cache of the
//! instances a manager initialized.

use std::collections::HashMap;
use std::fmt;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Arc, RwLock};

use serde::de::DeserializeOwned;
use serde_json::Value;
use switchyard_core::sync::{read, write};
use tower::BoxError;

use crate::error::ProviderError;
use crate::lifecycle::{BoxProvider, Provider};

type Factory<Req, Res> =
    Arc<dyn Fn(&str, &Value) -> Result<Provider<Req, Res>, ProviderError> + Send + Sync>;

/// Named factories that build providers of one kind (`Service<Req, Response = Res>`) from a
/// config value, and the instances a [`Manager`](crate::Manager) initialized from them: one
/// instance per name, so two managers over one registry cannot initialize the same name.
///
/// Factories take a `serde_json::Value` ([`register`](Self::register)) or a typed config
/// ([`register_typed`](Self::register_typed), whose errors name the bad field's JSON path).
/// A factory that panics fails that build only.
pub struct ProviderRegistry<Req, Res> {
    factories: RwLock<HashMap<String, Factory<Req, Res>>>,
    instances: RwLock<HashMap<String, BoxProvider<Req, Res>>>,
}

impl<Req, Res> Default for ProviderRegistry<Req, Res> {
    fn default() -> Self {
        Self {
            factories: RwLock::default(),
            instances: RwLock::default(),
        }
    }
}

impl<Req, Res> fmt::Debug for ProviderRegistry<Req, Res> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProviderRegistry")
            .field("factories", &self.factories())
            .field("instances", &self.instances())
            .finish()
    }
}

impl<Req, Res> ProviderRegistry<Req, Res> {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers `factory` under `name` (replacing any factory of that name; providers
    /// already built stay as they are). The factory reads the config as a JSON value.
    pub fn register<F, E>(&self, name: impl Into<String>, factory: F)
    where
        F: Fn(&Value) -> Result<Provider<Req, Res>, E> + Send + Sync + 'static,
        E: Into<BoxError>,
    {
        let factory: Factory<Req, Res> = Arc::new(move |provider, config| {
            factory(config).map_err(|e| ProviderError::Factory {
                provider: provider.to_owned(),
                source: e.into(),
            })
        });
        write(&self.factories).insert(name.into(), factory);
    }

    /// Registers `factory` under `name`, taking a typed config: the JSON value is
    /// deserialized into `C` first, and a value that does not fit fails with
    /// [`ProviderError::InvalidConfig`] naming the field's JSON path (`C` may use
    /// `#[serde(deny_unknown_fields)]` to catch typos).
    pub fn register_typed<C, F, E>(&self, name: impl Into<String>, factory: F)
    where
        C: DeserializeOwned,
        F: Fn(C) -> Result<Provider<Req, Res>, E> + Send + Sync + 'static,
        E: Into<BoxError>,
    {
        let factory: Factory<Req, Res> = Arc::new(move |provider, config| {
            let config: C =
                switchyard_core::config::deserialize(config, "config").map_err(|error| {
                    ProviderError::InvalidConfig {
                        provider: provider.to_owned(),
                        error,
                    }
                })?;
            factory(config).map_err(|e| ProviderError::Factory {
                provider: provider.to_owned(),
                source: e.into(),
            })
        });
        write(&self.factories).insert(name.into(), factory);
    }

    /// Builds a provider from the factory `name` with `config`: a new instance each time,
    /// not initialized and not cached (a [`Manager`](crate::Manager) does both).
    ///
    /// # Errors
    ///
    /// [`ProviderError::UnknownFactory`], [`ProviderError::InvalidConfig`], or
    /// [`ProviderError::Factory`] (the factory failed or panicked).
    pub fn build(&self, name: &str, config: &Value) -> Result<Provider<Req, Res>, ProviderError> {
        let factory = read(&self.factories)
            .get(name)
            .cloned()
            .ok_or_else(|| ProviderError::UnknownFactory(name.to_owned()))?;
        catch_unwind(AssertUnwindSafe(|| factory(name, config))).unwrap_or_else(|panic| {
            Err(ProviderError::Factory {
                provider: name.to_owned(),
                source: format!(
                    "factory panicked: {}",
                    switchyard_core::panic_message(&*panic)
                )
                .into(),
            })
        })
    }

    /// The names of the registered factories, sorted.
    pub fn factories(&self) -> Vec<String> {
        let mut names: Vec<String> = read(&self.factories).keys().cloned().collect();
        names.sort_unstable();
        names
    }

    /// The cached instance named `name`: a provider a manager initialized and has not closed.
    pub fn instance(&self, name: &str) -> Option<BoxProvider<Req, Res>> {
        read(&self.instances).get(name).cloned()
    }

    /// The names of the cached instances, sorted.
    pub fn instances(&self) -> Vec<String> {
        let mut names: Vec<String> = read(&self.instances).keys().cloned().collect();
        names.sort_unstable();
        names
    }

    /// Caches `service` as instance `name`, unless an instance of that name is cached
    /// already (by another manager over this registry): answers whether it did.
    pub(crate) fn cache(&self, name: &str, service: BoxProvider<Req, Res>) -> bool {
        match write(&self.instances).entry(name.to_owned()) {
            std::collections::hash_map::Entry::Occupied(_) => false,
            std::collections::hash_map::Entry::Vacant(entry) => {
                entry.insert(service);
                true
            }
        }
    }

    pub(crate) fn evict(&self, name: &str) {
        write(&self.instances).remove(name);
    }
}
