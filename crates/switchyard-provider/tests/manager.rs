//! The registry and manager: lifecycle order, init failure isolation, close errors, typed
//! config errors, selection under provider failure, concurrency.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use serde::Deserialize;
use serde_json::json;
use switchyard_provider::patterns;
use switchyard_provider::{
    Close, CloseTimedOut, Initialize, Manager, Provider, ProviderError, ProviderRegistry, Selection,
};
use switchyard_resilience::ResilienceConfig;
use tower::{BoxError, Service, ServiceExt};

type Log = Arc<Mutex<Vec<String>>>;

#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
enum Behaviour {
    #[default]
    Ok,
    Error,
    Hang,
    Panic,
}

/// A test provider's typed config.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct Config {
    init: Behaviour,
    close: Behaviour,
}

/// A provider answering `name:request`, logging its lifecycle, failing calls while `down`.
#[derive(Clone)]
struct Recorded {
    name: &'static str,
    config: Config,
    log: Log,
    down: Arc<AtomicBool>,
}

impl Service<String> for Recorded {
    type Response = String;
    type Error = BoxError;
    type Future = std::future::Ready<Result<String, BoxError>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: String) -> Self::Future {
        std::future::ready(if self.down.load(Ordering::SeqCst) {
            Err(format!("{} is down", self.name).into())
        } else {
            Ok(format!("{}:{req}", self.name))
        })
    }
}

async fn behave(behaviour: Behaviour, what: &str) -> Result<(), BoxError> {
    match behaviour {
        Behaviour::Ok => Ok(()),
        Behaviour::Error => Err(format!("{what} failed").into()),
        Behaviour::Hang => std::future::pending().await,
        Behaviour::Panic => panic!("{what} exploded"),
    }
}

impl Initialize for Recorded {
    async fn initialize(&self) -> Result<(), BoxError> {
        self.log.lock().unwrap().push(format!("init {}", self.name));
        behave(self.config.init, &format!("init {}", self.name)).await
    }
}

impl Close for Recorded {
    async fn close(&self) -> Result<(), BoxError> {
        self.log
            .lock()
            .unwrap()
            .push(format!("close {}", self.name));
        behave(self.config.close, &format!("close {}", self.name)).await
    }
}

struct Fixture {
    registry: Arc<ProviderRegistry<String, String>>,
    log: Log,
    down: std::collections::HashMap<&'static str, Arc<AtomicBool>>,
}

/// A registry with one factory per name, each building a `Recorded` from a typed config.
fn fixture(names: &[&'static str]) -> Fixture {
    let registry = Arc::new(ProviderRegistry::new());
    let log = Log::default();
    let mut down = std::collections::HashMap::new();
    for &name in names {
        let (log, flag) = (Arc::clone(&log), Arc::new(AtomicBool::new(false)));
        down.insert(name, Arc::clone(&flag));
        registry.register_typed(name, move |config: Config| {
            Ok::<_, BoxError>(Provider::with_lifecycle(Recorded {
                name,
                config,
                log: Arc::clone(&log),
                down: Arc::clone(&flag),
            }))
        });
    }
    Fixture {
        registry,
        log,
        down,
    }
}

fn taken(log: &Log) -> Vec<String> {
    std::mem::take(&mut *log.lock().unwrap())
}

async fn call(manager: &Manager<String, String>) -> Result<String, BoxError> {
    manager.clone().oneshot("x".to_owned()).await
}

fn picked(manager: &Manager<String, String>) -> String {
    manager
        .get()
        .map(|p| p.name)
        .unwrap_or_else(|e| e.to_string())
}

#[tokio::test]
async fn providers_initialize_in_order_and_close_in_reverse() {
    let f = fixture(&["a", "b", "c"]);
    let manager = Manager::new("test", Arc::clone(&f.registry), Selection::FirstAvailable);
    for name in ["a", "b", "c"] {
        manager.initialize(name, &json!({})).await.unwrap();
    }
    assert_eq!(taken(&f.log), ["init a", "init b", "init c"]);
    assert_eq!(manager.names(), ["a", "b", "c"]);
    assert_eq!(
        f.registry.instances(),
        ["a", "b", "c"],
        "the registry caches them"
    );

    manager.close_all(Duration::from_secs(1)).await.unwrap();
    assert_eq!(taken(&f.log), ["close c", "close b", "close a"]);
    assert!(manager.names().is_empty());
    assert!(f.registry.instances().is_empty());
    assert!(matches!(manager.get(), Err(ProviderError::Closed)));
    assert!(matches!(
        manager.initialize("a", &json!({})).await,
        Err(ProviderError::Closed)
    ));
    // Closing again closes nothing twice.
    manager.close_all(Duration::from_secs(1)).await.unwrap();
    assert!(taken(&f.log).is_empty());
}

#[tokio::test]
async fn a_failed_initialize_leaves_only_that_provider_out() {
    let f = fixture(&["a", "b", "c"]);
    let manager = Manager::new("test", Arc::clone(&f.registry), Selection::FirstAvailable);
    manager.initialize("a", &json!({})).await.unwrap();
    let err = manager
        .initialize("b", &json!({ "init": "error" }))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, ProviderError::Initialize { provider, .. } if provider == "b"),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        "provider \"b\" failed to initialize: init b failed"
    );
    let err = manager
        .initialize("c", &json!({ "init": "panic" }))
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("initialize panicked: init c exploded"),
        "{err}"
    );

    assert_eq!(manager.names(), ["a"]);
    assert_eq!(manager.available(), ["a"]);
    assert!(matches!(
        manager.get_by_name("b"),
        Err(ProviderError::NotFound(_))
    ));
    assert_eq!(call(&manager).await.unwrap(), "a:x");

    // The name is free again: a good config initializes it.
    manager.initialize("b", &json!({})).await.unwrap();
    assert_eq!(manager.names(), ["a", "b"]);
    assert!(matches!(
        manager.initialize("b", &json!({})).await,
        Err(ProviderError::AlreadyInitialized(name)) if name == "b"
    ));
}

#[tokio::test(start_paused = true)]
async fn close_errors_are_collected_and_no_close_is_skipped() {
    let f = fixture(&["a", "b", "c", "d"]);
    let manager = Manager::new("test", Arc::clone(&f.registry), Selection::FirstAvailable);
    manager.initialize("a", &json!({})).await.unwrap();
    manager
        .initialize("b", &json!({ "close": "error" }))
        .await
        .unwrap();
    manager
        .initialize("c", &json!({ "close": "hang" }))
        .await
        .unwrap();
    manager
        .initialize("d", &json!({ "close": "panic" }))
        .await
        .unwrap();
    taken(&f.log);

    let started = tokio::time::Instant::now();
    let errors = manager.close_all(Duration::from_secs(2)).await.unwrap_err();
    assert_eq!(taken(&f.log), ["close d", "close c", "close b", "close a"]);
    assert_eq!(errors.providers().collect::<Vec<_>>(), ["d", "c", "b"]);
    let [(_, panicked), (_, hung), (_, failed)] = errors.errors() else {
        panic!("three errors: {errors}");
    };
    assert!(
        panicked.to_string().contains("panicked: close d exploded"),
        "{panicked}"
    );
    assert!(hung.is::<CloseTimedOut>(), "{hung}");
    assert_eq!(failed.to_string(), "close b failed");
    assert_eq!(
        started.elapsed(),
        Duration::from_secs(2),
        "only the hung close waited"
    );
}

#[tokio::test]
async fn bad_config_and_unknown_factories_are_typed_errors() {
    let f = fixture(&["a"]);
    f.registry.register("failing", |_: &serde_json::Value| {
        Err::<Provider<String, String>, _>("no credentials")
    });
    f.registry.register(
        "panicking",
        |_: &serde_json::Value| -> Result<Provider<String, String>, BoxError> {
            panic!("factory bug")
        },
    );
    let manager = Manager::new("test", Arc::clone(&f.registry), Selection::FirstAvailable);

    let err = manager.initialize("nope", &json!({})).await.unwrap_err();
    assert!(
        matches!(&err, ProviderError::UnknownFactory(name) if name == "nope"),
        "{err:?}"
    );

    let err = manager
        .initialize("a", &json!({ "close": "sometimes" }))
        .await
        .unwrap_err();
    let ProviderError::InvalidConfig { provider, error } = &err else {
        panic!("{err:?}");
    };
    assert_eq!((provider.as_str(), error.field()), ("a", "close"));
    let err = manager
        .initialize("a", &json!({ "clsoe": "ok" }))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("unknown field `clsoe`"), "{err}");

    let err = manager.initialize("failing", &json!({})).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "provider \"failing\" could not be built: no credentials"
    );
    let err = manager
        .initialize("panicking", &json!({}))
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("factory panicked: factory bug"),
        "{err}"
    );

    assert!(manager.names().is_empty(), "nothing was added");
    assert!(taken(&f.log).is_empty(), "nothing was initialized");
    manager.initialize("a", &json!({})).await.unwrap();
    assert_eq!(f.registry.factories(), ["a", "failing", "panicking"]);
}

#[tokio::test]
async fn first_available_fails_over_to_the_next_provider_and_back() {
    let f = fixture(&["a", "b"]);
    let manager = Manager::new("test", Arc::clone(&f.registry), Selection::FirstAvailable);
    manager.initialize("a", &json!({})).await.unwrap();
    manager.initialize("b", &json!({})).await.unwrap();
    assert_eq!(picked(&manager), "a");
    assert_eq!(call(&manager).await.unwrap(), "a:x");

    manager
        .set_health("a", switchyard_balance::Health::Unhealthy)
        .unwrap();
    assert_eq!(manager.available(), ["b"]);
    assert_eq!(picked(&manager), "b");
    assert_eq!(call(&manager).await.unwrap(), "b:x");

    manager
        .set_health("a", switchyard_balance::Health::Healthy)
        .unwrap();
    assert_eq!(picked(&manager), "a");

    manager
        .set_health("a", switchyard_balance::Health::Offline)
        .unwrap();
    manager
        .set_health("b", switchyard_balance::Health::Offline)
        .unwrap();
    assert!(matches!(manager.get(), Err(ProviderError::NoneAvailable)));
    let err = call(&manager).await.unwrap_err();
    assert_eq!(
        switchyard_core::find_rejection(&*err).map(|r| r.kind()),
        Some(switchyard_core::RejectionKind::NoAvailableEndpoint)
    );
}

/// A provider whose `poll_ready` never becomes ready (a connection that never comes up).
#[derive(Clone)]
struct Stalled;

impl Service<String> for Stalled {
    type Response = String;
    type Error = BoxError;
    type Future = std::future::Ready<Result<String, BoxError>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Pending
    }

    fn call(&mut self, _req: String) -> Self::Future {
        std::future::ready(Ok("stalled".to_owned()))
    }
}

#[tokio::test]
async fn availability_is_the_providers_readiness() {
    let f = fixture(&["b"]);
    f.registry.register("a", |_: &serde_json::Value| {
        Ok::<_, BoxError>(Provider::new(Stalled))
    });
    let manager = Manager::new("test", Arc::clone(&f.registry), Selection::FirstAvailable);
    manager.initialize("a", &json!({})).await.unwrap();
    manager.initialize("b", &json!({})).await.unwrap();
    tokio::task::yield_now().await;
    assert_eq!(manager.names(), ["a", "b"]);
    assert_eq!(manager.available(), ["b"], "a's poll_ready is pending");
    assert_eq!(picked(&manager), "b");
    assert_eq!(call(&manager).await.unwrap(), "b:x");
}

#[tokio::test]
async fn a_priority_list_picks_in_its_order_and_never_an_unlisted_provider() {
    let f = fixture(&["a", "b", "c"]);
    let manager = Manager::new(
        "test",
        Arc::clone(&f.registry),
        Selection::Priority(vec!["b".into(), "a".into()]),
    );
    for name in ["a", "b", "c"] {
        manager.initialize(name, &json!({})).await.unwrap();
    }
    assert_eq!(picked(&manager), "b");
    manager
        .set_health("b", switchyard_balance::Health::Unhealthy)
        .unwrap();
    assert_eq!(picked(&manager), "a");
    manager
        .set_health("a", switchyard_balance::Health::Unhealthy)
        .unwrap();
    assert!(
        matches!(manager.get(), Err(ProviderError::NoneAvailable)),
        "c is not in the list"
    );
    assert_eq!(
        manager.available(),
        ["c"],
        "c is available, just never selected"
    );
}

#[tokio::test]
async fn round_robin_takes_turns_and_a_default_goes_first() {
    let f = fixture(&["a", "b"]);
    let manager = Manager::new("test", Arc::clone(&f.registry), Selection::RoundRobin);
    manager.initialize("a", &json!({})).await.unwrap();
    manager.initialize("b", &json!({})).await.unwrap();
    let turns: Vec<String> = (0..4).map(|_| picked(&manager)).collect();
    assert_eq!(turns, ["a", "b", "a", "b"]);

    assert!(matches!(
        manager.set_default("zz"),
        Err(ProviderError::NotFound(_))
    ));
    manager.set_default("b").unwrap();
    assert_eq!(manager.default_provider().as_deref(), Some("b"));
    for _ in 0..3 {
        assert_eq!(picked(&manager), "b");
        assert_eq!(call(&manager).await.unwrap(), "b:x");
    }
    // A default that is not available is passed over.
    manager
        .set_health("b", switchyard_balance::Health::Offline)
        .unwrap();
    assert_eq!(picked(&manager), "a");
}

#[tokio::test]
async fn calls_through_the_manager_are_counted_and_fail_over() {
    let f = fixture(&["a", "b"]);
    let manager = Manager::new("test", Arc::clone(&f.registry), Selection::FirstAvailable)
        .with_outlier(switchyard_balance::OutlierConfig {
            consecutive_failures: 2,
            ..Default::default()
        })
        .unwrap();
    manager.initialize("a", &json!({})).await.unwrap();
    manager.initialize("b", &json!({})).await.unwrap();
    f.down["a"].store(true, Ordering::SeqCst);
    assert!(call(&manager).await.is_err());
    assert!(call(&manager).await.is_err());
    // Two failures in a row ejected a: calls fail over to b.
    assert_eq!(call(&manager).await.unwrap(), "b:x");
    let stats = manager.stats();
    assert_eq!((stats[0].failed_requests, stats[0].ejected), (2, true));
    assert_eq!(stats[1].successful_requests, 1);
    assert_eq!(manager.available(), ["b"]);
}

#[tokio::test(start_paused = true)]
async fn initialize_with_wraps_the_provider_in_a_resilience_stack() {
    let attempts = Arc::new(AtomicUsize::new(0));
    let registry = Arc::new(ProviderRegistry::<String, String>::new());
    registry.register("flaky", {
        let attempts = Arc::clone(&attempts);
        move |_: &serde_json::Value| {
            let attempts = Arc::clone(&attempts);
            Ok::<_, BoxError>(Provider::new(tower::service_fn(move |req: String| {
                let n = attempts.fetch_add(1, Ordering::SeqCst);
                async move {
                    if n < 2 {
                        Err::<String, BoxError>("flaky".into())
                    } else {
                        Ok(format!("ok:{req}"))
                    }
                }
            })))
        }
    });
    let manager = Manager::new("test", registry, Selection::FirstAvailable);
    let config = ResilienceConfig::from_json(r#"{ "retry": { "max_attempts": 3 } }"#).unwrap();
    manager
        .initialize_with(
            "flaky",
            &json!({}),
            patterns::request_response("flaky", &config).unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(call(&manager).await.unwrap(), "ok:x");
    assert_eq!(attempts.load(Ordering::SeqCst), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_gets_race_initialize_and_close_all() {
    const NAMES: [&str; 5] = ["a", "b", "c", "d", "e"];
    let names = NAMES;
    let f = fixture(&names);
    let manager = Manager::new("test", Arc::clone(&f.registry), Selection::RoundRobin);
    let stop = Arc::new(AtomicBool::new(false));
    let getters: Vec<_> = (0..8)
        .map(|_| {
            let (manager, stop) = (manager.clone(), Arc::clone(&stop));
            tokio::spawn(async move {
                let (mut served, mut closed) = (0, 0);
                while !stop.load(Ordering::SeqCst) {
                    match manager.get() {
                        Ok(picked) => {
                            assert!(names.contains(&picked.name.as_str()));
                            served += 1;
                        }
                        Err(ProviderError::NoneAvailable) => {}
                        Err(ProviderError::Closed) => closed += 1,
                        Err(other) => panic!("unexpected: {other}"),
                    }
                    tokio::task::yield_now().await;
                }
                (served, closed)
            })
        })
        .collect();
    // The same name initialized twice at once: exactly one wins.
    let empty = json!({});
    let (first, second) = tokio::join!(
        manager.initialize("a", &empty),
        manager.initialize("a", &empty)
    );
    assert!(first.is_ok() != second.is_ok(), "{first:?} {second:?}");
    let rest = NAMES[1..].iter().map(|name| {
        let manager = manager.clone();
        tokio::spawn(async move { manager.initialize(name, &json!({})).await })
    });
    for task in rest.collect::<Vec<_>>() {
        task.await.unwrap().unwrap();
    }
    tokio::time::sleep(Duration::from_millis(20)).await;
    manager.close_all(Duration::from_secs(1)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    stop.store(true, Ordering::SeqCst);
    let mut total = (0, 0);
    for getter in getters {
        let (served, closed) = getter.await.unwrap();
        total = (total.0 + served, total.1 + closed);
    }
    assert!(total.0 > 0 && total.1 > 0, "{total:?}");
    let log = taken(&f.log);
    for name in names {
        let closes = log
            .iter()
            .filter(|l| **l == format!("close {name}"))
            .count();
        assert_eq!(closes, 1, "{name} closed once: {log:?}");
    }
}

#[tokio::test]
async fn a_provider_initialized_during_close_all_is_closed_at_once() {
    let gate = Arc::new(tokio::sync::Notify::new());
    let started = Arc::new(tokio::sync::Notify::new());
    let log = Log::default();

    #[derive(Clone)]
    struct Slow {
        started: Arc<tokio::sync::Notify>,
        gate: Arc<tokio::sync::Notify>,
        log: Log,
    }
    impl Service<String> for Slow {
        type Response = String;
        type Error = BoxError;
        type Future = std::future::Ready<Result<String, BoxError>>;
        fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
            Poll::Ready(Ok(()))
        }
        fn call(&mut self, _req: String) -> Self::Future {
            std::future::ready(Ok(String::new()))
        }
    }
    impl Initialize for Slow {
        async fn initialize(&self) -> Result<(), BoxError> {
            self.started.notify_one();
            self.gate.notified().await;
            Ok(())
        }
    }
    impl Close for Slow {
        async fn close(&self) -> Result<(), BoxError> {
            self.log.lock().unwrap().push("close slow".into());
            Ok(())
        }
    }

    let registry = Arc::new(ProviderRegistry::<String, String>::new());
    registry.register("slow", {
        let (gate, started, log) = (Arc::clone(&gate), Arc::clone(&started), Arc::clone(&log));
        move |_: &serde_json::Value| {
            Ok::<_, BoxError>(Provider::with_lifecycle(Slow {
                started: Arc::clone(&started),
                gate: Arc::clone(&gate),
                log: Arc::clone(&log),
            }))
        }
    });
    let manager = Manager::new("test", registry, Selection::FirstAvailable);
    let init = tokio::spawn({
        let manager = manager.clone();
        async move { manager.initialize("slow", &json!({})).await }
    });
    started.notified().await;
    manager.close_all(Duration::from_secs(1)).await.unwrap();
    gate.notify_one();
    assert!(matches!(init.await.unwrap(), Err(ProviderError::Closed)));
    assert_eq!(taken(&log), ["close slow"]);
    assert!(manager.names().is_empty());
}

#[tokio::test]
async fn initialize_futures_are_send() {
    let f = fixture(&["a"]);
    let manager = Manager::new("test", Arc::clone(&f.registry), Selection::FirstAvailable);
    let config = ResilienceConfig::default();
    let layer = patterns::request_response("a", &config).unwrap();
    tokio::spawn({
        let manager = manager.clone();
        async move {
            manager
                .initialize_with("a", &json!({}), layer)
                .await
                .unwrap();
            manager.clone().oneshot("x".to_owned()).await.unwrap()
        }
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn two_managers_over_one_registry_cannot_take_the_same_name() {
    let f = fixture(&["a", "b"]);
    let first = Manager::new("first", Arc::clone(&f.registry), Selection::FirstAvailable);
    let second = Manager::new("second", Arc::clone(&f.registry), Selection::FirstAvailable);
    first.initialize("a", &json!({})).await.unwrap();
    second.initialize("b", &json!({})).await.unwrap();
    let err = second.initialize("a", &json!({})).await.unwrap_err();
    assert!(
        matches!(&err, ProviderError::AlreadyInitialized(name) if name == "a"),
        "{err:?}"
    );
    // The refused instance was initialized, so it was closed rather than leaked.
    assert_eq!(taken(&f.log), ["init a", "init b", "init a", "close a"]);
    assert!(second.get_by_name("a").is_err(), "a is the first manager's");
    assert!(first.get_by_name("a").is_ok());

    second.close_all(Duration::from_secs(1)).await.unwrap();
    assert_eq!(taken(&f.log), ["close b"]);
    assert!(
        first.get_by_name("a").is_ok(),
        "the first manager's provider is untouched"
    );
    assert_eq!(call(&first).await.unwrap(), "a:x");
}

#[tokio::test(start_paused = true)]
async fn a_close_all_dropped_halfway_leaves_nothing_serving_and_the_next_one_finishes() {
    let f = fixture(&["a", "b", "c"]);
    let manager = Manager::new("test", Arc::clone(&f.registry), Selection::FirstAvailable);
    manager.initialize("a", &json!({})).await.unwrap();
    manager
        .initialize("b", &json!({ "close": "hang" }))
        .await
        .unwrap();
    manager.initialize("c", &json!({})).await.unwrap();
    taken(&f.log);

    // Given up on while b's close hangs: c is closed, b was started, a is still queued.
    let outcome = tokio::time::timeout(
        Duration::from_secs(1),
        manager.close_all(Duration::from_secs(60)),
    )
    .await;
    assert!(outcome.is_err());
    assert_eq!(taken(&f.log), ["close c", "close b"]);
    assert!(manager.names().is_empty());
    assert!(matches!(manager.get(), Err(ProviderError::Closed)));
    assert!(
        call(&manager).await.is_err(),
        "no provider serves calls any more"
    );

    manager.close_all(Duration::from_secs(1)).await.unwrap();
    assert_eq!(taken(&f.log), ["close a"], "the rest closed once each");
}
