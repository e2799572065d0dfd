//! The breaker's state machine against a reference model, over random runs of successful
//! calls, failing calls and time passing, in paused tokio time.
//!
//! After every step: the handle reports an automatic state (closed, open, half-open) and the
//! model's; a call is refused only while open (a run of synchronous calls never leaves a probe
//! in flight, so half-open always has a free slot) and only before the open wait has passed;
//! a closed breaker opens exactly on the `threshold`-th consecutive failure; and every
//! transition a subscriber sees is a legal edge, the one the model took.

mod support;

use std::time::Duration;

use proptest::prelude::*;
use switchyard_breaker::{BreakerOpen, BreakerState, CircuitBreakerConfig, Trip};
use tokio::sync::broadcast::Receiver;
use tokio::time::Instant;

use support::{Backend, breaker, call, ms};

#[derive(Debug, Clone, Copy)]
enum Step {
    Succeed,
    Fail,
    Advance(u64),
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        2 => Just(Step::Succeed),
        3 => Just(Step::Fail),
        2 => (0u64..200).prop_map(Step::Advance),
    ]
}

/// What the breaker should be doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Model {
    Closed { run: u32 },
    Open { until: Instant },
    HalfOpen { successes: u32 },
}

impl Model {
    fn state(self) -> BreakerState {
        match self {
            Self::Closed { .. } => BreakerState::Closed,
            Self::Open { .. } => BreakerState::Open,
            Self::HalfOpen { .. } => BreakerState::HalfOpen,
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Params {
    threshold: u32,
    successes_to_close: u32,
    permitted: u32,
    wait: Duration,
}

impl Params {
    /// The model's answer to a call at `now` that fails or not: whether it is admitted, the
    /// next model, and the transitions taken.
    fn call(
        self,
        model: Model,
        now: Instant,
        fail: bool,
    ) -> (bool, Model, Vec<(BreakerState, BreakerState)>) {
        let mut edges = Vec::new();
        let model = match model {
            Model::Open { until } if now < until => return (false, model, edges),
            Model::Open { .. } => {
                edges.push((BreakerState::Open, BreakerState::HalfOpen));
                Model::HalfOpen { successes: 0 }
            }
            other => other,
        };
        let next = match model {
            Model::Closed { run } if fail && run + 1 >= self.threshold => {
                edges.push((BreakerState::Closed, BreakerState::Open));
                Model::Open {
                    until: now + self.wait,
                }
            }
            Model::Closed { run } if fail => Model::Closed { run: run + 1 },
            Model::Closed { .. } => Model::Closed { run: 0 },
            Model::HalfOpen { .. } if fail => {
                edges.push((BreakerState::HalfOpen, BreakerState::Open));
                Model::Open {
                    until: now + self.wait,
                }
            }
            Model::HalfOpen { successes } if successes + 1 >= self.successes_to_close => {
                edges.push((BreakerState::HalfOpen, BreakerState::Closed));
                Model::Closed { run: 0 }
            }
            Model::HalfOpen { successes } => Model::HalfOpen {
                successes: successes + 1,
            },
            Model::Open { .. } => unreachable!("an expired open wait was half-opened above"),
        };
        (true, next, edges)
    }
}

const LEGAL: [(BreakerState, BreakerState); 4] = [
    (BreakerState::Closed, BreakerState::Open),
    (BreakerState::Open, BreakerState::HalfOpen),
    (BreakerState::HalfOpen, BreakerState::Open),
    (BreakerState::HalfOpen, BreakerState::Closed),
];

fn drain(
    events: &mut Receiver<switchyard_breaker::StateChange>,
) -> Vec<(BreakerState, BreakerState)> {
    let mut seen = Vec::new();
    while let Ok(change) = events.try_recv() {
        seen.push((change.from, change.to));
    }
    seen
}

async fn run(params: Params, steps: Vec<Step>) -> Result<(), TestCaseError> {
    let config = CircuitBreakerConfig::new(Trip::consecutive_failures(params.threshold))
        .with_wait_in_open(params.wait)
        .with_half_open(params.permitted, params.successes_to_close);
    let (mut svc, backend, handle): (_, Backend, _) = breaker(config);
    let mut events = handle.subscribe();
    let mut model = Model::Closed { run: 0 };
    // Consecutive failures seen while closed, counted here apart from the model.
    let mut run_while_closed = 0;
    let mut opened_at: Option<Instant> = None;

    for (i, step) in steps.into_iter().enumerate() {
        let now = Instant::now();
        let before = handle.state();
        match step {
            Step::Advance(millis) => {
                tokio::time::advance(ms(millis)).await;
                prop_assert_eq!(
                    handle.state(),
                    before,
                    "step {}: time alone moves nothing",
                    i
                );
                prop_assert_eq!(drain(&mut events), vec![], "step {}", i);
                continue;
            }
            Step::Succeed | Step::Fail => {}
        }
        let fail = matches!(step, Step::Fail);
        backend.fail(fail);
        let result = call(&mut svc, 0).await;
        let after = handle.state();
        let seen = drain(&mut events);

        let refusal = result
            .as_ref()
            .err()
            .and_then(|e| e.downcast_ref::<BreakerOpen>());
        let (admitted, next, edges) = params.call(model, now, fail);
        prop_assert_eq!(
            refusal.is_none(),
            admitted,
            "step {}: {:?} from {:?}",
            i,
            step,
            model
        );
        if let Some(refusal) = refusal {
            // Refused only while open, before the wait has passed, and told how long is left.
            prop_assert_eq!(
                before,
                BreakerState::Open,
                "step {}: refused while {:?}",
                i,
                before
            );
            let Model::Open { until } = model else {
                unreachable!("refused by the model")
            };
            prop_assert_eq!(refusal.retry_after(), Some(until - now), "step {}", i);
        } else {
            prop_assert_eq!(result.is_err(), fail, "step {}: the backend's answer", i);
            if before == BreakerState::Open {
                let opened = opened_at.expect("opened before");
                prop_assert!(now - opened >= params.wait, "step {}: admitted early", i);
            }
        }

        prop_assert!(
            matches!(
                after,
                BreakerState::Closed | BreakerState::Open | BreakerState::HalfOpen
            ),
            "step {}: {:?}",
            i,
            after
        );
        prop_assert_eq!(
            after,
            next.state(),
            "step {}: {:?} after {:?}",
            i,
            step,
            model
        );
        for edge in &seen {
            prop_assert!(LEGAL.contains(edge), "step {}: illegal edge {:?}", i, edge);
        }
        prop_assert_eq!(&seen, &edges, "step {}", i);

        if before == BreakerState::Closed {
            run_while_closed = if fail { run_while_closed + 1 } else { 0 };
            prop_assert_eq!(
                after == BreakerState::Open,
                run_while_closed == params.threshold,
                "step {}: opens exactly on failure {} of a run",
                i,
                params.threshold
            );
        }
        if seen.iter().any(|&(_, to)| to == BreakerState::Open) {
            opened_at = Some(now);
        }
        if after == BreakerState::Closed {
            if before != BreakerState::Closed {
                run_while_closed = 0;
            }
            prop_assert_eq!(
                handle.snapshot().window.failures,
                u64::from(run_while_closed),
                "step {}: the current run",
                i
            );
        }
        model = next;
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn the_breaker_follows_its_state_machine(
        threshold in 1u32..5,
        successes_to_close in 1u32..4,
        permitted in 1u32..3,
        wait in (1u64..300).prop_map(ms),
        steps in proptest::collection::vec(step(), 0..60),
    ) {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .unwrap();
        let params = Params { threshold, successes_to_close, permitted, wait };
        runtime.block_on(run(params, steps))?;
    }
}
