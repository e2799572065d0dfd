//! The reload diff, pure: the routes built before, the rows read now and the local services'
//! generations → what to do with each row, and which routes go. Nothing here builds a route
//! or touches the snapshot; [`Router::reload`](crate::Router::reload) carries the plan out.

use std::collections::{HashMap, HashSet};
use std::hash::BuildHasher;
use std::sync::Arc;

use crate::source::RouteRow;
use crate::status::ReloadReport;

/// What the diff needs to know of a route built before.
pub(crate) trait Built {
    /// Whether it was built from a row with this strategy, endpoint and config.
    fn same_row(&self, row: &RouteRow) -> bool;
    /// Whether it cannot be served.
    fn is_broken(&self) -> bool;
    /// The local services it used (as primary or fallback), with their generations then.
    fn locals_used(&self) -> &[(Arc<str>, u64)];
}

/// What a reload does with one row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Step {
    /// Keep the route as built (its connections and breaker state with it): same row, not
    /// broken, and every local service it used is the one registered now.
    Keep,
    /// A route new in this snapshot: build it.
    Add,
    /// Its row changed, or a local service it used was replaced: build it again.
    Change,
    /// Broken, with the same row: build it again, since a transport or local service may
    /// have appeared since. It counts as changed only if it comes back.
    Retry,
}

impl Step {
    /// Counts a row carried out by this step in `report`; `broken` says whether the route
    /// built (or kept) for it cannot be served.
    pub(crate) fn count(self, report: &mut ReloadReport, broken: bool) {
        match self {
            Self::Keep => report.unchanged += 1,
            Self::Add => report.added += 1,
            Self::Change => report.changed += 1,
            Self::Retry if broken => report.unchanged += 1,
            Self::Retry => report.changed += 1,
        }
        if broken {
            report.broken += 1;
        }
    }
}

/// A reload's plan: a step per row, in the rows' order, and the routes no row names any more.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Plan {
    /// One per row.
    pub(crate) steps: Vec<Step>,
    /// The routes to drop (their in-flight calls finish on them), by name, sorted.
    pub(crate) removed: Vec<Arc<str>>,
}

/// Whether every local service in `used` is still registered with the generation it had.
pub(crate) fn locals_current(
    generation: impl Fn(&str) -> Option<u64>,
    used: &[(Arc<str>, u64)],
) -> bool {
    used.iter()
        .all(|(name, built)| generation(name) == Some(*built))
}

/// The step for one row, given the route of its name built before (if any) and the current
/// generation of each local service.
pub(crate) fn step<B: Built>(
    previous: Option<&B>,
    row: &RouteRow,
    generation: impl Fn(&str) -> Option<u64>,
) -> Step {
    match previous {
        None => Step::Add,
        Some(built) if !built.same_row(row) => Step::Change,
        Some(built) if built.is_broken() => Step::Retry,
        Some(built) if locals_current(generation, built.locals_used()) => Step::Keep,
        Some(_) => Step::Change,
    }
}

/// The plan for rebuilding from `rows` what `old` holds.
pub(crate) fn plan<B, S>(
    old: &HashMap<Arc<str>, Arc<B>, S>,
    rows: &[RouteRow],
    generation: impl Fn(&str) -> Option<u64> + Copy,
) -> Plan
where
    B: Built,
    S: BuildHasher,
{
    let steps = rows
        .iter()
        .map(|row| {
            let previous = old.get(row.service_name.as_str()).map(|b| &**b);
            step(previous, row, generation)
        })
        .collect();
    let named: HashSet<&str, foldhash::fast::RandomState> =
        rows.iter().map(|row| row.service_name.as_str()).collect();
    let mut removed: Vec<Arc<str>> = old
        .keys()
        .filter(|name| !named.contains(&***name))
        .cloned()
        .collect();
    removed.sort();
    Plan { steps, removed }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A route built before, as the diff sees it.
    struct Fake {
        row: RouteRow,
        broken: bool,
        locals: Vec<(Arc<str>, u64)>,
    }

    impl Built for Fake {
        fn same_row(&self, row: &RouteRow) -> bool {
            self.row.strategy == row.strategy
                && self.row.endpoint == row.endpoint
                && self.row.config == row.config
        }

        fn is_broken(&self) -> bool {
            self.broken
        }

        fn locals_used(&self) -> &[(Arc<str>, u64)] {
            &self.locals
        }
    }

    fn built(row: RouteRow) -> Fake {
        Fake {
            row,
            broken: false,
            locals: Vec::new(),
        }
    }

    fn http(name: &str, endpoint: &str) -> RouteRow {
        RouteRow::new(name, "http").with_endpoint(endpoint)
    }

    /// Local service `billing` at generation 1, nothing else.
    fn generation(name: &str) -> Option<u64> {
        (name == "billing").then_some(1)
    }

    fn old(routes: Vec<Fake>) -> HashMap<Arc<str>, Arc<Fake>> {
        routes
            .into_iter()
            .map(|f| (Arc::from(f.row.service_name.as_str()), Arc::new(f)))
            .collect()
    }

    #[test]
    fn a_route_with_no_previous_build_is_added() {
        assert_eq!(
            step::<Fake>(None, &RouteRow::new("a", "noop"), generation),
            Step::Add
        );
    }

    #[test]
    fn the_same_row_is_kept() {
        let before = built(http("a", "http://a.example/"));
        assert_eq!(
            step(Some(&before), &http("a", "http://a.example/"), generation),
            Step::Keep
        );
    }

    #[test]
    fn a_new_strategy_endpoint_or_config_is_a_change() {
        let before = built(http("a", "http://a.example/"));
        for row in [
            RouteRow::new("a", "noop").with_endpoint("http://a.example/"),
            http("a", "http://b.example/"),
            http("a", "http://a.example/").with_config(r#"{"timeout":"1s"}"#),
            RouteRow::new("a", "http"),
        ] {
            assert_eq!(
                step(Some(&before), &row, generation),
                Step::Change,
                "{row:?}"
            );
        }
    }

    #[test]
    fn a_broken_route_with_the_same_row_is_retried_and_with_a_new_row_changed() {
        let before = Fake {
            broken: true,
            ..built(http("a", "http://a.example/"))
        };
        assert_eq!(
            step(Some(&before), &http("a", "http://a.example/"), generation),
            Step::Retry
        );
        assert_eq!(
            step(Some(&before), &http("a", "http://c.example/"), generation),
            Step::Change
        );
    }

    #[test]
    fn a_replaced_or_removed_local_service_changes_the_routes_that_used_it() {
        let row = RouteRow::new("billing", "local");
        let current = Fake {
            locals: vec![("billing".into(), 1)],
            ..built(row.clone())
        };
        let replaced = Fake {
            locals: vec![("billing".into(), 0)],
            ..built(row.clone())
        };
        let gone = Fake {
            locals: vec![("ledger".into(), 1)],
            ..built(row.clone())
        };
        assert_eq!(step(Some(&current), &row, generation), Step::Keep);
        assert_eq!(step(Some(&replaced), &row, generation), Step::Change);
        assert_eq!(step(Some(&gone), &row, generation), Step::Change);
    }

    #[test]
    fn a_plan_has_a_step_per_row_in_order_and_the_removed_routes_sorted() {
        let old = old(vec![
            built(http("kept", "http://k.example/")),
            built(http("moved", "http://m.example/")),
            built(RouteRow::new("zeta", "noop")),
            built(RouteRow::new("alpha", "noop")),
        ]);
        let rows = [
            RouteRow::new("new", "noop"),
            http("moved", "http://elsewhere.example/"),
            http("kept", "http://k.example/"),
        ];
        let plan = plan(&old, &rows, generation);
        assert_eq!(plan.steps, [Step::Add, Step::Change, Step::Keep]);
        assert_eq!(plan.removed, [Arc::from("alpha"), Arc::from("zeta")]);
    }

    #[test]
    fn an_empty_table_removes_everything_and_no_rows_plan_nothing() {
        let everything = old(vec![built(RouteRow::new("a", "noop"))]);
        let plan_all = plan(&everything, &[], generation);
        assert!(plan_all.steps.is_empty());
        assert_eq!(plan_all.removed, [Arc::from("a")]);
        let nothing = plan(&old(Vec::new()), &[], generation);
        assert_eq!(
            nothing,
            Plan {
                steps: Vec::new(),
                removed: Vec::new()
            }
        );
    }

    #[test]
    fn steps_count_into_the_report_as_the_router_reports_them() {
        let mut report = ReloadReport::default();
        Step::Keep.count(&mut report, false);
        Step::Add.count(&mut report, false);
        Step::Add.count(&mut report, true);
        Step::Change.count(&mut report, false);
        Step::Retry.count(&mut report, true);
        Step::Retry.count(&mut report, false);
        assert_eq!(
            (
                report.added,
                report.changed,
                report.unchanged,
                report.broken
            ),
            (2, 2, 2, 2)
        );
    }
}
