//! Helpers shared by the balancer's integration tests: scriptable endpoints (answering, slow,
//! failing, one call at a time), a seeded balancer over them, calls, and a health check.

// Each test binary uses a different subset of these helpers.
#![allow(dead_code)]

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use switchyard_balance::{Balance, EndpointConfig, Health, Hint, Strategy};
use tower::util::BoxCloneSyncService;
use tower::{BoxError, Service, ServiceExt, service_fn};

/// The request: a key to route on (for consistent hashing) and a payload.
pub(crate) type Req = (Option<String>, u32);

pub(crate) type Backend = BoxCloneSyncService<Req, String, BoxError>;

/// An endpoint answering its own name after `delay`, failing while `failing` is set.
pub(crate) fn backend(name: &'static str, delay: Duration, failing: Arc<AtomicBool>) -> Backend {
    BoxCloneSyncService::new(service_fn(move |_req: Req| {
        let failing = failing.load(Ordering::SeqCst);
        async move {
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            if failing {
                Err::<String, BoxError>(format!("{name} is down").into())
            } else {
                Ok(name.to_owned())
            }
        }
    }))
}

pub(crate) fn ok(name: &'static str) -> Backend {
    backend(name, Duration::ZERO, Arc::default())
}

pub(crate) fn balance(strategy: Strategy, names: &[&'static str]) -> Balance<Req, String> {
    let balance = Balance::new("test", strategy)
        .with_seed(7)
        .with_hint(|req: &Req| req.0.clone().map(Hint::key));
    for name in names {
        balance
            .add(*name, ok(name), &EndpointConfig::default())
            .unwrap();
    }
    balance
}

pub(crate) async fn call(
    balance: &Balance<Req, String>,
    key: Option<&str>,
) -> Result<String, BoxError> {
    balance.clone().oneshot((key.map(str::to_owned), 0)).await
}

pub(crate) async fn shares(balance: &Balance<Req, String>, calls: usize) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    for _ in 0..calls {
        *counts
            .entry(call(balance, None).await.unwrap())
            .or_default() += 1;
    }
    counts
}

/// An endpoint that can take one call at a time (`ConcurrencyLimit` 1, so `poll_ready` waits
/// while a call runs), whose calls wait until `open` is set, counting its `poll_ready` polls.
/// Its clones share `token`, so a test sees when the balancer drops them all.
#[derive(Clone)]
pub(crate) struct OneAtATime {
    inner: tower::limit::ConcurrencyLimit<Backend>,
    polls: Arc<std::sync::atomic::AtomicUsize>,
    _token: Arc<()>,
}

impl Service<Req> for OneAtATime {
    type Response = String;
    type Error = BoxError;
    type Future = <tower::limit::ConcurrencyLimit<Backend> as Service<Req>>::Future;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), BoxError>> {
        self.polls.fetch_add(1, Ordering::SeqCst);
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        self.inner.call(req)
    }
}

pub(crate) fn one_at_a_time(
    name: &'static str,
    open: tokio::sync::watch::Receiver<bool>,
) -> (OneAtATime, Arc<std::sync::atomic::AtomicUsize>, Arc<()>) {
    let backend = BoxCloneSyncService::new(service_fn(move |_req: Req| {
        let mut open = open.clone();
        async move {
            open.wait_for(|open| *open).await.map_err(BoxError::from)?;
            Ok::<_, BoxError>(name.to_owned())
        }
    }));
    let polls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let token = Arc::new(());
    let service = OneAtATime {
        inner: tower::limit::ConcurrencyLimit::new(backend, 1),
        polls: Arc::clone(&polls),
        _token: Arc::clone(&token),
    };
    (service, polls, token)
}

/// Takes `busy`'s only slot with a call from outside the balancer, held until the gate opens.
pub(crate) async fn occupy(busy: &OneAtATime) -> tokio::task::JoinHandle<Result<String, BoxError>> {
    let mut occupant = busy.clone();
    occupant.ready().await.unwrap();
    tokio::spawn(occupant.call((None, 0)))
}

/// Keeps an endpoint's only slot taken: the gate it waits on, and the call holding the slot.
pub(crate) struct Stuck {
    _gate: tokio::sync::watch::Sender<bool>,
    _occupant: tokio::task::JoinHandle<Result<String, BoxError>>,
}

/// A one-slot endpoint whose slot a call from outside the balancer holds for good, with the
/// token its clones share.
pub(crate) async fn stuck() -> (OneAtATime, Arc<()>, Stuck) {
    let (gate, open) = tokio::sync::watch::channel(false);
    let (busy, _, token) = one_at_a_time("busy", open);
    let occupant = occupy(&busy).await;
    (
        busy,
        token,
        Stuck {
            _gate: gate,
            _occupant: occupant,
        },
    )
}

/// A round-robin balancer whose calls name their preferred endpoint (the request's key).
pub(crate) fn preferring() -> Balance<Req, String> {
    Balance::new("test", Strategy::RoundRobin).with_hint(|req: &Req| {
        req.0.clone().map(|name| Hint {
            key: None,
            preferred: vec![name],
        })
    })
}

pub(crate) fn prefer(name: &str) -> Req {
    (Some(name.to_owned()), 0)
}

/// Lets spawned tasks run (paused time: the clock does not move while they have work).
pub(crate) async fn settle() {
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
}

pub(crate) fn check_service(
    up: Arc<AtomicBool>,
    delay: Duration,
) -> impl Service<(), Response = Health, Error = BoxError, Future: Send> + Send + 'static {
    service_fn(move |()| {
        let up = up.load(Ordering::SeqCst);
        async move {
            tokio::time::sleep(delay).await;
            if up {
                Ok::<_, BoxError>(Health::Healthy)
            } else {
                Err("health endpoint says down".into())
            }
        }
    })
}
