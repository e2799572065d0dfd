//! What a factory builds: a provider service and the lifecycle hooks it opts into.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use tower::util::BoxCloneSyncService;
use tower::{BoxError, Service, ServiceExt};

/// A provider as a manager holds it: any tower `Service`, boxed once when built.
pub type BoxProvider<Req, Res> = BoxCloneSyncService<Req, Res, BoxError>;

/// Opt-in setup for providers that need it (dial a connection, validate a binary, warm a
/// cache). The [`Manager`](crate::Manager) calls it once, before the provider is first used;
/// if it fails, the provider is left out with [`ProviderError::Initialize`].
///
/// It is called on a clone of the service, so whatever it sets up must be shared between
/// clones (behind an `Arc`, as a client's connection pool is). It must not block the thread
/// (the manager's deadlines act at `.await` points). A provider whose initialization is
/// cancelled (its future dropped) is dropped without [`Close`].
///
/// [`ProviderError::Initialize`]: crate::ProviderError::Initialize
pub trait Initialize {
    /// Prepares the provider.
    fn initialize(&self) -> impl Future<Output = Result<(), BoxError>> + Send;
}

/// Opt-in cleanup for providers holding resources (connections, daemon processes). The
/// [`Manager`](crate::Manager) calls it from [`close_all`](crate::Manager::close_all), in
/// reverse initialization order, each with a deadline; it runs on a clone, like
/// [`Initialize`], and must not block the thread either.
pub trait Close {
    /// Releases the provider's resources.
    fn close(&self) -> impl Future<Output = Result<(), BoxError>> + Send;
}

type HookFuture = Pin<Box<dyn Future<Output = Result<(), BoxError>> + Send>>;
pub(crate) type Hook = Arc<dyn Fn() -> HookFuture + Send + Sync>;

/// What a factory builds: the provider's service, boxed, and the lifecycle it opts into —
/// [`new`](Self::new) for none, [`with_initialize`](Self::with_initialize),
/// [`with_close`](Self::with_close) or [`with_lifecycle`](Self::with_lifecycle) (both).
pub struct Provider<Req, Res> {
    pub(crate) service: BoxProvider<Req, Res>,
    pub(crate) initialize: Option<Hook>,
    pub(crate) close: Option<Hook>,
}

impl<Req, Res> fmt::Debug for Provider<Req, Res> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Provider")
            .field("initialize", &self.initialize.is_some())
            .field("close", &self.close.is_some())
            .finish_non_exhaustive()
    }
}

fn boxed<S, Req, Res>(service: S) -> BoxProvider<Req, Res>
where
    S: Service<Req, Response = Res> + Clone + Send + Sync + 'static,
    S::Error: Into<BoxError> + 'static,
    S::Future: Send + 'static,
{
    BoxCloneSyncService::new(service.map_err(Into::into))
}

impl<Req, Res> Provider<Req, Res> {
    /// A provider with no lifecycle: ready as built.
    pub fn new<S>(service: S) -> Self
    where
        S: Service<Req, Response = Res> + Clone + Send + Sync + 'static,
        S::Error: Into<BoxError> + 'static,
        S::Future: Send + 'static,
    {
        Self {
            service: boxed(service),
            initialize: None,
            close: None,
        }
    }

    /// A provider the manager initializes before first use.
    pub fn with_initialize<S>(service: S) -> Self
    where
        S: Service<Req, Response = Res> + Initialize + Clone + Send + Sync + 'static,
        S::Error: Into<BoxError> + 'static,
        S::Future: Send + 'static,
    {
        let initialize = initialize_hook(&service);
        Self {
            initialize: Some(initialize),
            ..Self::new(service)
        }
    }

    /// A provider the manager closes on shutdown.
    pub fn with_close<S>(service: S) -> Self
    where
        S: Service<Req, Response = Res> + Close + Clone + Send + Sync + 'static,
        S::Error: Into<BoxError> + 'static,
        S::Future: Send + 'static,
    {
        let close = close_hook(&service);
        Self {
            close: Some(close),
            ..Self::new(service)
        }
    }

    /// A provider the manager initializes before first use and closes on shutdown.
    pub fn with_lifecycle<S>(service: S) -> Self
    where
        S: Service<Req, Response = Res> + Initialize + Close + Clone + Send + Sync + 'static,
        S::Error: Into<BoxError> + 'static,
        S::Future: Send + 'static,
    {
        let (initialize, close) = (initialize_hook(&service), close_hook(&service));
        Self {
            initialize: Some(initialize),
            close: Some(close),
            ..Self::new(service)
        }
    }

    /// Whether the provider opts into [`Initialize`].
    pub fn initializes(&self) -> bool {
        self.initialize.is_some()
    }

    /// Whether the provider opts into [`Close`].
    pub fn closes(&self) -> bool {
        self.close.is_some()
    }

    /// The provider's service, leaving its lifecycle behind (for using a registry without a
    /// manager).
    pub fn into_service(self) -> BoxProvider<Req, Res> {
        self.service
    }
}

fn initialize_hook<S: Initialize + Clone + Send + Sync + 'static>(service: &S) -> Hook {
    let service = service.clone();
    Arc::new(move || {
        let service = service.clone();
        Box::pin(async move { service.initialize().await })
    })
}

fn close_hook<S: Close + Clone + Send + Sync + 'static>(service: &S) -> Hook {
    let service = service.clone();
    Arc::new(move || {
        let service = service.clone();
        Box::pin(async move { service.close().await })
    })
}
